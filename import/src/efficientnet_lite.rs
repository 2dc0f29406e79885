//! EfficientNet-Lite (lite0..lite4) as an ONNX graph, from the `efficientnet_lite_pytorch`
//! state dict (TensorFlow's EfficientNet-Lite weights ported to PyTorch).
//!
//! Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-excitation, and stem and
//! head widths are not scaled. Convolutions use TensorFlow's static "SAME" padding, computed from
//! the input resolution, which can be asymmetric (one more pixel at the bottom/right). Batch norm
//! is folded into the preceding convolution.

use crate::weights::{ImportError, Weights};
use dishcam_models::manifest::{DType, Dim, TensorSpec};
use dishcam_models::onnx::{Attr, GraphBuilder};
use tract_onnx::pb::ModelProto;

const BN_EPS: f32 = 1e-3;
const STEM: usize = 32;
const HEAD: usize = 1280;

/// (repeats, kernel, stride, expand ratio, in filters, out filters) of the seven stages.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// A member of the Lite family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub width: f64,
    pub depth: f64,
    pub resolution: usize,
}

impl Variant {
    /// `efficientnet-lite0` .. `efficientnet-lite4`, with the coefficients of the TF builder.
    pub fn by_name(name: &str) -> Option<Variant> {
        let (width, depth, resolution) = match name {
            "efficientnet-lite0" => (1.0, 1.0, 224),
            "efficientnet-lite1" => (1.0, 1.1, 240),
            "efficientnet-lite2" => (1.1, 1.2, 260),
            "efficientnet-lite3" => (1.2, 1.4, 280),
            "efficientnet-lite4" => (1.4, 1.8, 300),
            _ => return None,
        };
        Some(Variant {
            width,
            depth,
            resolution,
        })
    }

    fn filters(&self, f: usize) -> usize {
        let divisor: f64 = 8.0;
        let scaled = f as f64 * self.width;
        let mut new = divisor.max(((scaled + divisor / 2.0) / divisor).floor() * divisor);
        if new < 0.9 * scaled {
            new += divisor;
        }
        new as usize
    }

    fn repeats(&self, stage: usize, r: usize) -> usize {
        if stage == 0 || stage == STAGES.len() - 1 {
            r
        } else {
            (self.depth * r as f64).ceil() as usize
        }
    }
}

/// Names and shapes of the graph produced by [`build`].
pub fn signature(v: &Variant, classes: usize) -> (TensorSpec, Vec<TensorSpec>) {
    let r = v.resolution as u64;
    let input = TensorSpec::new(
        "pixels",
        DType::F32,
        vec![
            Dim::named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(r),
            Dim::Fixed(r),
        ],
    );
    let outputs = vec![
        TensorSpec::new(
            "embedding",
            DType::F32,
            vec![Dim::named("batch"), Dim::Fixed(HEAD as u64)],
        ),
        TensorSpec::new(
            "logits",
            DType::F32,
            vec![Dim::named("batch"), Dim::Fixed(classes as u64)],
        ),
    ];
    (input, outputs)
}

/// Builds the graph: `pixels` [batch,3,R,R] -> `embedding` [batch,1280] (pooled features after
/// the head convolution) and `logits` [batch,classes].
pub fn build(w: &Weights, v: &Variant) -> Result<ModelProto, ImportError> {
    let classes = w
        .shape("_fc.bias")
        .ok_or_else(|| ImportError::Missing("_fc.bias".into()))?[0];
    let (input, outputs) = signature(v, classes);
    let mut g = GraphBuilder::new("efficientnet_lite");
    let six = g.f32_tensor("relu6_max", &[], &[6.0]);
    let zero = g.f32_tensor("relu6_min", &[], &[0.0]);
    let relu6 =
        |g: &mut GraphBuilder, x: &str, name: &str| g.node("Clip", name, &[x, &zero, &six], &[]);

    let mut x = g.input(&input);
    let mut size = v.resolution;
    x = conv_bn(&mut g, w, &x, "_conv_stem", "_bn0", 3, STEM, 3, 2, 1, size)?;
    x = relu6(&mut g, &x, "stem_relu6");
    size = size.div_ceil(2);

    let mut block = 0;
    let mut channels = STEM;
    for (s, &(r, k, stride, expand, _in, out)) in STAGES.iter().enumerate() {
        let out = v.filters(out);
        for rep in 0..v.repeats(s, r) {
            let stride = if rep == 0 { stride } else { 1 };
            let p = format!("_blocks.{block}");
            let mut h = x.clone();
            let hidden = channels * expand;
            if expand != 1 {
                h = conv_bn(
                    &mut g,
                    w,
                    &h,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    channels,
                    hidden,
                    1,
                    1,
                    1,
                    size,
                )?;
                h = relu6(&mut g, &h, &format!("{p}.expand_relu6"));
            }
            h = conv_bn(
                &mut g,
                w,
                &h,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                hidden,
                hidden,
                k,
                stride,
                hidden,
                size,
            )?;
            h = relu6(&mut g, &h, &format!("{p}.dw_relu6"));
            let out_size = size.div_ceil(stride);
            h = conv_bn(
                &mut g,
                w,
                &h,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                hidden,
                out,
                1,
                1,
                1,
                out_size,
            )?;
            if stride == 1 && channels == out {
                h = g.node("Add", &format!("{p}.skip"), &[&h, &x], &[]);
            }
            x = h;
            channels = out;
            size = out_size;
            block += 1;
        }
    }
    if w.contains(&format!("_blocks.{block}._depthwise_conv.weight")) {
        return Err(ImportError::Checkpoint(format!(
            "has more than {block} blocks; it is not this EfficientNet-Lite variant"
        )));
    }
    x = conv_bn(
        &mut g,
        w,
        &x,
        "_conv_head",
        "_bn1",
        channels,
        HEAD,
        1,
        1,
        1,
        size,
    )?;
    x = relu6(&mut g, &x, "head_relu6");
    let pooled = g.node("GlobalAveragePool", "pool", &[&x], &[]);
    let embedding = g.node("Flatten", "flatten", &[&pooled], &[("axis", Attr::Int(1))]);
    let fc_w = g.f32_tensor(
        "_fc.weight",
        &[classes, HEAD],
        w.get("_fc.weight", &[classes, HEAD])?,
    );
    let fc_b = g.f32_tensor("_fc.bias", &[classes], w.get("_fc.bias", &[classes])?);
    let logits = g.node(
        "Gemm",
        "fc",
        &[&embedding, &fc_w, &fc_b],
        &[("transB", Attr::Int(1))],
    );
    g.output(&embedding, &outputs[0]);
    g.output(&logits, &outputs[1]);
    Ok(g.finish("EfficientNet-Lite written by dishcam from an efficientnet_lite_pytorch state dict; BN folded"))
}

/// TensorFlow "SAME" padding for input size `size`: (before, after), after >= before.
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Conv (no bias) followed by batch norm, folded into one Conv with bias.
#[allow(clippy::too_many_arguments)]
fn conv_bn(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    size: usize,
) -> Result<String, ImportError> {
    let per_group = cin / groups;
    let weight = w.get(&format!("{conv}.weight"), &[cout, per_group, k, k])?;
    let gamma = w.get(&format!("{bn}.weight"), &[cout])?;
    let beta = w.get(&format!("{bn}.bias"), &[cout])?;
    let mean = w.get(&format!("{bn}.running_mean"), &[cout])?;
    let var = w.get(&format!("{bn}.running_var"), &[cout])?;
    let (folded, bias) = fold_batch_norm(weight, gamma, beta, mean, var, BN_EPS);
    let wn = g.f32_tensor(&format!("{conv}.weight"), &[cout, per_group, k, k], &folded);
    let bname = g.f32_tensor(&format!("{conv}.bias"), &[cout], &bias);
    let (before, after) = same_padding(size, k, stride);
    let (b, a) = (before as i64, after as i64);
    Ok(g.node(
        "Conv",
        conv,
        &[x, &wn, &bname],
        &[
            ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
            ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
            ("pads", Attr::Ints(vec![b, b, a, a])),
            ("group", Attr::Int(groups as i64)),
        ],
    ))
}

/// Folds `y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta` into the convolution's weight
/// ([cout, ...] row-major) and a bias.
pub fn fold_batch_norm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let cout = gamma.len();
    let per = weight.len() / cout;
    let mut folded = weight.to_vec();
    let mut bias = vec![0.0; cout];
    for c in 0..cout {
        let scale = gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt();
        for v in &mut folded[c * per..(c + 1) * per] {
            *v = (*v as f64 * scale) as f32;
        }
        bias[c] = (beta[c] as f64 - mean[c] as f64 * scale) as f32;
    }
    (folded, bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn filter_rounding_matches_the_tf_builder() {
        let l2 = Variant::by_name("efficientnet-lite2").unwrap();
        assert_eq!(l2.filters(16), 16);
        assert_eq!(l2.filters(24), 24);
        assert_eq!(l2.filters(40), 48);
        assert_eq!(l2.filters(320), 352);
        let l4 = Variant::by_name("efficientnet-lite4").unwrap();
        assert_eq!(l4.repeats(1, 2), 4);
        assert_eq!(l4.repeats(0, 1), 1);
    }

    #[test]
    fn folding_batch_norm_equals_applying_it() {
        let weight = [1.0, -2.0, 0.5, 3.0];
        let (gamma, beta, mean, var) = ([2.0, 0.5], [0.1, -0.2], [0.3, 1.0], [4.0, 0.25]);
        let (fw, fb) = fold_batch_norm(&weight, &gamma, &beta, &mean, &var, 0.0);
        let x = [0.7f32, -1.1];
        for c in 0..2 {
            let conv = weight[c * 2] * x[0] + weight[c * 2 + 1] * x[1];
            let bn = gamma[c] * (conv - mean[c]) / var[c].sqrt() + beta[c];
            let folded = fw[c * 2] * x[0] + fw[c * 2 + 1] * x[1] + fb[c];
            assert!((bn - folded).abs() < 1e-6, "{bn} vs {folded}");
        }
    }
}
