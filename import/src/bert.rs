//! BERT-family sentence encoders (MiniLM, AnglE/UAE, ...) as an ONNX graph with pooling and
//! optional L2 normalisation in the graph, from a Hugging Face `config.json` + safetensors.
//!
//! Layer norm is written out from primitive ops (ReduceMean, Sub, Mul, Sqrt, Div) because opset
//! 17's LayerNormalization is not implemented by every backend we target; onnxruntime fuses the
//! pattern back. GELU is the exact erf form, as `hidden_act = "gelu"` means in transformers.

use crate::weights::{transpose, ImportError, Weights};
use dishcam_models::manifest::{DType, Dim, Pooling, TensorSpec};
use dishcam_models::onnx::{Attr, GraphBuilder};
use tract_onnx::pb::ModelProto;

/// The parts of a Hugging Face BERT `config.json` the graph depends on.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_pos")]
    pub position_embedding_type: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_pos() -> String {
    "absolute".into()
}

impl BertConfig {
    pub fn from_json(text: &str) -> Result<Self, ImportError> {
        let c: BertConfig =
            serde_json::from_str(text).map_err(|e| ImportError::Config(e.to_string()))?;
        if c.hidden_act != "gelu" {
            return Err(ImportError::Config(format!(
                "hidden_act '{}' is not supported (only 'gelu')",
                c.hidden_act
            )));
        }
        if c.position_embedding_type != "absolute" {
            return Err(ImportError::Config(format!(
                "position_embedding_type '{}' is not supported (only 'absolute')",
                c.position_embedding_type
            )));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(ImportError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        Ok(c)
    }
}

/// Input and output specs of the graph produced by [`build`].
pub fn signature(c: &BertConfig) -> (Vec<TensorSpec>, TensorSpec) {
    let seq = || vec![Dim::named("batch"), Dim::named("sequence")];
    let inputs = vec![
        TensorSpec::new("input_ids", DType::I64, seq()),
        TensorSpec::new("attention_mask", DType::I64, seq()),
        TensorSpec::new("token_type_ids", DType::I64, seq()),
    ];
    let output = TensorSpec::new(
        "sentence_embedding",
        DType::F32,
        vec![Dim::named("batch"), Dim::Fixed(c.hidden_size as u64)],
    );
    (inputs, output)
}

/// Builds `input_ids, attention_mask, token_type_ids` [batch, sequence] i64 ->
/// `sentence_embedding` [batch, hidden] f32, pooled as `pooling`, L2-normalised if `normalize`.
pub fn build(
    w: &Weights,
    c: &BertConfig,
    pooling: Pooling,
    normalize: bool,
) -> Result<ModelProto, ImportError> {
    let h = c.hidden_size;
    let nh = c.num_attention_heads;
    let dh = h / nh;
    let (inputs, output) = signature(c);
    let mut g = GraphBuilder::new("bert_sentence_encoder");
    let ids = g.input(&inputs[0]);
    let mask = g.input(&inputs[1]);
    let types = g.input(&inputs[2]);

    let word = tensor(
        &mut g,
        w,
        "embeddings.word_embeddings.weight",
        &[c.vocab_size, h],
    )?;
    let pos = tensor(
        &mut g,
        w,
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, h],
    )?;
    let typ = tensor(
        &mut g,
        w,
        "embeddings.token_type_embeddings.weight",
        &[c.type_vocab_size, h],
    )?;
    let x_word = g.node("Gather", "embeddings.word", &[&word, &ids], &[]);
    let x_type = g.node("Gather", "embeddings.type", &[&typ, &types], &[]);
    // Position ids 0..sequence as a slice of the position table.
    let shape = g.node("Shape", "embeddings.shape", &[&ids], &[]);
    let one_idx = g.i64_tensor("const.index1", &[1], &[1]);
    let seq_len = g.node(
        "Gather",
        "embeddings.seq_len",
        &[&shape, &one_idx],
        &[("axis", Attr::Int(0))],
    );
    let zero1 = g.i64_tensor("const.zero1", &[1], &[0]);
    let x_pos = g.node(
        "Slice",
        "embeddings.position",
        &[&pos, &zero1, &seq_len, &zero1],
        &[],
    );
    let x = g.node("Add", "embeddings.add_type", &[&x_word, &x_type], &[]);
    let x = g.node("Add", "embeddings.add_position", &[&x, &x_pos], &[]);
    let mut x = layer_norm(
        &mut g,
        w,
        &x,
        "embeddings.LayerNorm",
        h,
        c.layer_norm_eps as f32,
    )?;

    // Additive attention mask [batch, 1, 1, sequence]: 0 where attended, -10000 where padded.
    let maskf = g.node(
        "Cast",
        "mask.float",
        &[&mask],
        &[("to", Attr::Int(DType::F32.to_onnx() as i64))],
    );
    let axes12 = g.i64_tensor("const.axes12", &[2], &[1, 2]);
    let mask4 = g.node("Unsqueeze", "mask.unsqueeze", &[&maskf, &axes12], &[]);
    let one = g.f32_tensor("const.one", &[], &[1.0]);
    let inv = g.node("Sub", "mask.invert", &[&one, &mask4], &[]);
    let big = g.f32_tensor("const.mask_value", &[], &[-10000.0]);
    let additive = g.node("Mul", "mask.additive", &[&inv, &big], &[]);

    let heads_shape = g.i64_tensor("const.heads_shape", &[4], &[0, 0, nh as i64, dh as i64]);
    let merge_shape = g.i64_tensor("const.merge_shape", &[3], &[0, 0, h as i64]);
    let scale = g.f32_tensor("const.attention_scale", &[], &[1.0 / (dh as f32).sqrt()]);
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let q = linear(&mut g, w, &x, &format!("{p}.attention.self.query"), h, h)?;
        let k = linear(&mut g, w, &x, &format!("{p}.attention.self.key"), h, h)?;
        let v = linear(&mut g, w, &x, &format!("{p}.attention.self.value"), h, h)?;
        let split = |g: &mut GraphBuilder, t: &str, name: &str, perm: [i64; 4]| {
            let r = g.node(
                "Reshape",
                &format!("{p}.{name}.split"),
                &[t, &heads_shape],
                &[],
            );
            g.node(
                "Transpose",
                &format!("{p}.{name}.heads"),
                &[&r],
                &[("perm", Attr::Ints(perm.to_vec()))],
            )
        };
        let q = split(&mut g, &q, "q", [0, 2, 1, 3]);
        let k = split(&mut g, &k, "k", [0, 2, 3, 1]);
        let v = split(&mut g, &v, "v", [0, 2, 1, 3]);
        let scores = g.node("MatMul", &format!("{p}.scores"), &[&q, &k], &[]);
        let scores = g.node("Mul", &format!("{p}.scores.scale"), &[&scores, &scale], &[]);
        let scores = g.node(
            "Add",
            &format!("{p}.scores.mask"),
            &[&scores, &additive],
            &[],
        );
        let probs = g.node(
            "Softmax",
            &format!("{p}.probs"),
            &[&scores],
            &[("axis", Attr::Int(-1))],
        );
        let ctx = g.node("MatMul", &format!("{p}.context"), &[&probs, &v], &[]);
        let ctx = g.node(
            "Transpose",
            &format!("{p}.context.merge_t"),
            &[&ctx],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let ctx = g.node(
            "Reshape",
            &format!("{p}.context.merge"),
            &[&ctx, &merge_shape],
            &[],
        );
        let attn = linear(
            &mut g,
            w,
            &ctx,
            &format!("{p}.attention.output.dense"),
            h,
            h,
        )?;
        let attn = g.node("Add", &format!("{p}.attention.residual"), &[&attn, &x], &[]);
        let x1 = layer_norm(
            &mut g,
            w,
            &attn,
            &format!("{p}.attention.output.LayerNorm"),
            h,
            c.layer_norm_eps as f32,
        )?;
        let inter = linear(
            &mut g,
            w,
            &x1,
            &format!("{p}.intermediate.dense"),
            h,
            c.intermediate_size,
        )?;
        let inter = gelu(&mut g, &inter, &format!("{p}.intermediate.gelu"));
        let out = linear(
            &mut g,
            w,
            &inter,
            &format!("{p}.output.dense"),
            c.intermediate_size,
            h,
        )?;
        let out = g.node("Add", &format!("{p}.output.residual"), &[&out, &x1], &[]);
        x = layer_norm(
            &mut g,
            w,
            &out,
            &format!("{p}.output.LayerNorm"),
            h,
            c.layer_norm_eps as f32,
        )?;
    }

    let mut pooled = match pooling {
        Pooling::Mean => {
            let axes2 = g.i64_tensor("const.axes2", &[1], &[2]);
            let m = g.node("Unsqueeze", "pool.mask", &[&maskf, &axes2], &[]);
            let masked = g.node("Mul", "pool.masked", &[&x, &m], &[]);
            let axes1 = g.i64_tensor("const.axes1", &[1], &[1]);
            let sum = g.node(
                "ReduceSum",
                "pool.sum",
                &[&masked, &axes1],
                &[("keepdims", Attr::Int(0))],
            );
            let count = g.node(
                "ReduceSum",
                "pool.count",
                &[&m, &axes1],
                &[("keepdims", Attr::Int(0))],
            );
            let min_count = g.f32_tensor("const.min_count", &[], &[1e-9]);
            let count = g.node("Max", "pool.count_clamp", &[&count, &min_count], &[]);
            g.node("Div", "pool.mean", &[&sum, &count], &[])
        }
        Pooling::Cls => {
            let zero = g.i64_tensor("const.zero", &[], &[0]);
            g.node(
                "Gather",
                "pool.cls",
                &[&x, &zero],
                &[("axis", Attr::Int(1))],
            )
        }
    };
    if normalize {
        let sq = g.node("Mul", "norm.square", &[&pooled, &pooled], &[]);
        let axes = g.i64_tensor("const.norm_axes", &[1], &[1]);
        let ss = g.node(
            "ReduceSum",
            "norm.sum",
            &[&sq, &axes],
            &[("keepdims", Attr::Int(1))],
        );
        let n = g.node("Sqrt", "norm.sqrt", &[&ss], &[]);
        let eps = g.f32_tensor("const.norm_eps", &[], &[1e-12]);
        let n = g.node("Max", "norm.clamp", &[&n, &eps], &[]);
        pooled = g.node("Div", "norm.div", &[&pooled, &n], &[]);
    }
    g.output(&pooled, &output);
    Ok(g.finish("BERT sentence encoder written by dishcam from a Hugging Face checkpoint"))
}

fn tensor(
    g: &mut GraphBuilder,
    w: &Weights,
    name: &str,
    shape: &[usize],
) -> Result<String, ImportError> {
    Ok(g.f32_tensor(name, shape, w.get(name, shape)?))
}

/// `x @ W^T + b` with W stored pre-transposed as [in, out].
fn linear(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    prefix: &str,
    din: usize,
    dout: usize,
) -> Result<String, ImportError> {
    let weight = w.get(&format!("{prefix}.weight"), &[dout, din])?;
    let wt = g.f32_tensor(
        &format!("{prefix}.weight_t"),
        &[din, dout],
        &transpose(weight, dout, din),
    );
    let b = tensor(g, w, &format!("{prefix}.bias"), &[dout])?;
    let y = g.node("MatMul", prefix, &[x, &wt], &[]);
    Ok(g.node("Add", &format!("{prefix}.bias_add"), &[&y, &b], &[]))
}

fn layer_norm(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    prefix: &str,
    h: usize,
    eps: f32,
) -> Result<String, ImportError> {
    let gamma = tensor(g, w, &format!("{prefix}.weight"), &[h])?;
    let beta = tensor(g, w, &format!("{prefix}.bias"), &[h])?;
    let axes = [("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
    let mean = g.node("ReduceMean", &format!("{prefix}.mean"), &[x], &axes);
    let d = g.node("Sub", &format!("{prefix}.centre"), &[x, &mean], &[]);
    let sq = g.node("Mul", &format!("{prefix}.square"), &[&d, &d], &[]);
    let var = g.node("ReduceMean", &format!("{prefix}.var"), &[&sq], &axes);
    let e = g.f32_tensor(&format!("{prefix}.eps"), &[], &[eps]);
    let var = g.node("Add", &format!("{prefix}.var_eps"), &[&var, &e], &[]);
    let sd = g.node("Sqrt", &format!("{prefix}.std"), &[&var], &[]);
    let n = g.node("Div", &format!("{prefix}.normalise"), &[&d, &sd], &[]);
    let n = g.node("Mul", &format!("{prefix}.gamma"), &[&n, &gamma], &[]);
    Ok(g.node("Add", &format!("{prefix}.beta"), &[&n, &beta], &[]))
}

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
fn gelu(g: &mut GraphBuilder, x: &str, name: &str) -> String {
    let s = g.f32_tensor(
        &format!("{name}.inv_sqrt2"),
        &[],
        &[std::f32::consts::FRAC_1_SQRT_2],
    );
    let half = g.f32_tensor(&format!("{name}.half"), &[], &[0.5]);
    let one = g.f32_tensor(&format!("{name}.one"), &[], &[1.0]);
    let t = g.node("Mul", &format!("{name}.scale"), &[x, &s], &[]);
    let t = g.node("Erf", &format!("{name}.erf"), &[&t], &[]);
    let t = g.node("Add", &format!("{name}.one_plus"), &[&t, &one], &[]);
    let t = g.node("Mul", &format!("{name}.times_x"), &[&t, x], &[]);
    g.node("Mul", &format!("{name}.half_of"), &[&t, &half], &[])
}
