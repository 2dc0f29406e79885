//! The library calls each fuzz target makes, shared with the stable regression test
//! (`tests/fuzz_regressions.rs` includes this file) so that a saved input replays exactly what the
//! fuzzer ran. Every function returns `Err` with the message a user would see for bad input; a
//! panic is a bug.

use std::path::Path;

use dishcam_capture::decode::{decode_bytes, DecodeOptions};
use dishcam_imageproc::preprocess::Preprocessor;
use dishcam_models::manifest::{ColourOrder, Crop, Interpolation, Layout, Preprocess};
use dishcam_models::pack::parse_manifest;
use dishcam_recipes::{embedding_text, import_bytes, Format, Recipe};

/// The `lite` pack's image preprocessing (224x224, centre crop 0.875, values in [-1, 1]), with the
/// interpolation, crop, layout and colour order picked by `sel` so every branch is reached.
fn lite_preprocess(sel: u8) -> (Preprocess, Layout) {
    let spec = Preprocess {
        width: 224,
        height: 224,
        crop: if (sel / 3).is_multiple_of(2) {
            Crop::Center { fraction: 0.875 }
        } else {
            Crop::None
        },
        interpolation: match sel % 3 {
            0 => Interpolation::Bilinear,
            1 => Interpolation::Bicubic,
            _ => Interpolation::Nearest,
        },
        colour_order: if (sel / 12).is_multiple_of(2) {
            ColourOrder::Rgb
        } else {
            ColourOrder::Bgr
        },
        range: 255.0,
        mean: [127.0; 3],
        std: [128.0; 3],
    };
    let layout = if (sel / 6).is_multiple_of(2) {
        Layout::Nchw
    } else {
        Layout::Nhwc
    };
    (spec, layout)
}

/// `image_preprocess`: the first byte picks the preprocessing variant, the rest is the photo:
/// decoded as `dishcam classify` and `serve` decode it (default pixel limit), then preprocessed
/// into the encoder's input as `Encoder::preprocess` does.
pub fn image_preprocess(data: &[u8]) -> Result<(), String> {
    let Some((&sel, bytes)) = data.split_first() else {
        return Err("empty input".into());
    };
    let img =
        decode_bytes(bytes, "upload.jpg", &DecodeOptions::default()).map_err(|e| e.to_string())?;
    let (spec, layout) = lite_preprocess(sel);
    let mut pre = Preprocessor::new(&spec, layout);
    let mut input = vec![f32::NAN; pre.output_len()];
    let (w, h) = img.dimensions();
    pre.run(img.as_raw(), w, h, &mut input)
        .map_err(|e| e.to_string())?;
    assert!(
        input.iter().all(|v| (-1.0..=1.0).contains(v)),
        "{w}x{h}: preprocessing left values outside [-1, 1]"
    );
    Ok(())
}

/// `pack_manifest`: `pack.toml` bytes parsed and validated as `Pack::open_dir` does; a manifest
/// that passes must also write back (`Manifest::to_toml`, used by pull, import and teach) to text
/// that parses and validates again.
pub fn pack_manifest(data: &[u8]) -> Result<(), String> {
    let path = Path::new("packs/fuzz/pack.toml");
    let m = parse_manifest(path, data).map_err(|e| e.to_string())?;
    let _ = m.files();
    let text = m.to_toml();
    if let Err(e) = parse_manifest(path, text.as_bytes()) {
        panic!("a valid manifest does not read back after to_toml: {e}\n{text}");
    }
    Ok(())
}

/// One recipe importer over `data` held in memory; checks what the importer promises about the
/// recipes it hands on, and counts them against the report.
pub fn import(format: Format, data: &[u8]) -> Result<(), String> {
    let mut handed = 0u64;
    let report = import_bytes(Path::new("fuzz-input"), data, format, &mut |r: Recipe| {
        assert!(!r.title.is_empty(), "a recipe without a title was accepted");
        assert!(
            !r.ingredients.is_empty(),
            "a recipe without ingredients was accepted"
        );
        assert!(!embedding_text(&r).is_empty());
        handed += 1;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    assert_eq!(report.imported, handed, "the report miscounts imports");
    assert_eq!(
        report.skipped,
        report.skip_reasons.values().sum::<u64>(),
        "skip reasons do not add up"
    );
    Ok(())
}

/// `recipe1m`: the bytes as a layer1 file and as a layer2 file.
pub fn recipe1m(data: &[u8]) -> Result<(), String> {
    let layer2 = import(Format::Recipe1mLayer2, data);
    import(Format::Recipe1m, data).and(layer2)
}

/// `recipenlg`: the bytes as a RecipeNLG CSV file.
pub fn recipenlg(data: &[u8]) -> Result<(), String> {
    import(Format::RecipeNlg, data)
}

/// `jsonld`: the bytes as a schema.org JSON-LD file or an HTML page with `ld+json` blocks.
pub fn jsonld(data: &[u8]) -> Result<(), String> {
    import(Format::JsonLd, data)
}

/// `jsonl`: the bytes as this crate's JSONL recipe store.
pub fn jsonl(data: &[u8]) -> Result<(), String> {
    import(Format::Jsonl, data)
}
