//! Importers on the real samples (skipped loudly when absent) and on small constructed inputs.

use std::path::{Path, PathBuf};

use dishcam_recipes::import::{import_files, import_into_store, Format, Progress};
use dishcam_recipes::{detect_format, read_jsonl, Recipe};

fn shared(p: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(p);
    if dir.exists() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: {} is absent; sample-data import test not run",
            dir.display()
        );
        None
    }
}

fn import(
    paths: &[PathBuf],
    format: Format,
) -> (Vec<Recipe>, dishcam_recipes::ImportReport, Vec<Progress>) {
    let mut out = Vec::new();
    let mut prog = Vec::new();
    let rep = import_files(
        paths,
        format,
        &mut |r| {
            out.push(r);
            Ok(())
        },
        &mut |p| prog.push(p),
    )
    .unwrap();
    (out, rep, prog)
}

#[test]
fn recipe1m_sample_imports_98_with_images() {
    let Some(dir) = shared("recipe1m-sample") else {
        return;
    };
    let l1 = dir.join("layer1.json");
    let l2 = dir.join("layer2.json");
    assert_eq!(detect_format(&l1).unwrap(), Format::Recipe1m);
    assert_eq!(detect_format(&l2).unwrap(), Format::Recipe1mLayer2);
    let (rs, rep, prog) = import(&[l1.clone(), l2], Format::Auto);
    assert_eq!((rep.imported, rep.skipped), (98, 0), "{rep:?}");
    assert_eq!(rs.len(), 98);
    assert!(rs
        .iter()
        .all(|r| r.id.starts_with("recipe1m-") && !r.ingredients.is_empty()));
    assert_eq!(rs.iter().filter(|r| !r.images.is_empty()).count(), 37);
    let total = std::fs::metadata(&l1).unwrap().len()
        + std::fs::metadata(dir.join("layer2.json")).unwrap().len();
    let last = prog.last().unwrap();
    assert_eq!((last.bytes_read, last.total_bytes), (total, total));
    assert!(prog.windows(2).all(|w| w[0].bytes_read <= w[1].bytes_read));
    let (_, rep, _) = import(&[l1], Format::Recipe1m);
    assert_eq!(rep.imported, 98);
}

#[test]
fn recipenlg_sample_imports_49() {
    let Some(dir) = shared("recipenlg-sample") else {
        return;
    };
    let csv = dir.join("RecipeNLG_dataset.csv");
    assert_eq!(detect_format(&csv).unwrap(), Format::RecipeNlg);
    let (rs, rep, _) = import(&[csv], Format::Auto);
    assert_eq!((rep.imported, rep.skipped), (49, 0), "{rep:?}");
    assert_eq!(rs[0].id, "recipenlg-0");
    assert_eq!(rs[0].title, "No-Bake Nut Cookies");
    assert_eq!(rs[0].ingredients.len(), 6);
    assert!(rs.iter().all(|r| !r.instructions.is_empty()));
}

#[test]
fn csv_bad_rows_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.csv");
    let mut data = b",title,ingredients,directions,link,source,NER\n".to_vec();
    data.extend_from_slice(b"0,Good,\"[\"\"1 egg\"\"]\",\"[\"\"Boil.\"\"]\",x.org/1,Gathered,[]\n");
    data.extend_from_slice(b"1,,\"[\"\"1 egg\"\"]\",\"[]\",x.org/2,Gathered,[]\n"); // no title
    data.extend_from_slice(b"2,Empty,\"[]\",\"[]\",x.org/3,Gathered,[]\n"); // no ingredients
    data.extend_from_slice(b"3,Broken,not a list,\"[]\",x.org/4,Gathered,[]\n"); // malformed
    data.extend_from_slice(
        b"4,Cr\xe8me br\xfbl\xe9e,\"['2 eggs', '1 cup cr\xe8me']\",\"[]\",x.org/5,Gathered,[]\n",
    ); // Latin-1, python list
    data.extend_from_slice(b"5,Short\n"); // too few fields
    data.extend_from_slice(b"0,Good again,\"[\"\"1 egg\"\"]\",\"[]\",x.org/1,Gathered,[]\n"); // duplicate id
    std::fs::write(&p, data).unwrap();
    let (rs, rep, _) = import(&[p], Format::Auto);
    assert_eq!(rep.imported, 2, "{rep:?}");
    assert_eq!(rep.skipped, 5);
    assert_eq!(rep.skip_reasons["no_title"], 1);
    assert_eq!(rep.skip_reasons["no_ingredients"], 1);
    assert_eq!(rep.skip_reasons["malformed"], 2);
    assert_eq!(rep.skip_reasons["duplicate"], 1);
    assert_eq!(rep.errors[0].record, 2);
    assert_eq!(rs[1].title, "Crème brûlée");
    assert_eq!(rs[1].ingredients, vec!["2 eggs", "1 cup crème"]);
}

#[test]
fn layer1_bad_records_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("layer1.json");
    let good = |id: &str| {
        format!(
            r#"{{"id":"{id}","title":"T {id}","ingredients":[{{"text":"1 egg"}}],"instructions":[{{"text":"Boil."}}],"partition":"train","url":"u"}}"#
        )
    };
    let body = format!(
        "[{},{},{},{},{}, \"junk\", {}",
        good("a1"),
        r#"{"id":"b2","title":"x","ingredients":"not a list"}"#,
        r#"{"id":"c3","title":"","ingredients":[{"text":"1 egg"}]}"#,
        good("a1"),
        r#"{"id":"d4","title":"Caf\u00e9","ingredients":[{"text":"caf"#.to_string() + "\u{e9}\"}]}",
        good("e5").trim_end_matches('}')
    );
    let mut bytes = body.into_bytes();
    bytes.extend_from_slice(b"\xff"); // invalid UTF-8 then EOF inside a record: truncated file
    std::fs::write(&p, &bytes).unwrap();
    let (rs, rep, _) = import(&[p], Format::Recipe1m);
    assert_eq!(
        rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["recipe1m-a1", "recipe1m-d4"]
    );
    assert_eq!(rep.skip_reasons["malformed"], 3, "{rep:?}"); // wrong shape, "junk", truncated tail
    assert_eq!(rep.skip_reasons["no_title"], 1);
    assert_eq!(rep.skip_reasons["duplicate"], 1);
    assert!(rep
        .errors
        .iter()
        .any(|e| e.message.contains("syntax error")));
}

const PAGE: &str = r#"<!DOCTYPE html><html><head><title>Pancakes</title>
<script type="application/ld+json">{"@context":"https://schema.org","@type":"WebSite","name":"x"}</script>
<script type="application/ld+json">
{"@context":"https://schema.org","@graph":[{"@type":"Recipe","name":"Fluffy Pancakes &amp; Syrup",
"url":"https://cooking.example/pancakes","recipeIngredient":["2 cups flour","2 eggs","1 1/2 cups milk"],
"recipeInstructions":"Mix everything.\nFry in a hot pan.","totalTime":"PT25M","recipeYield":"4 servings",
"recipeCuisine":"American","keywords":"breakfast, sweet"}]}
</script><script type="application/ld+json">{ broken </script></head><body></body></html>"#;

#[test]
fn jsonld_page_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("pancakes.html");
    std::fs::write(&page, PAGE).unwrap();
    let sub = dir.path().join("more");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("soup.json"),
        r#"[{"@type":"Recipe","name":"Tomato Soup","recipeIngredient":["6 tomatoes","1 onion"],"recipeInstructions":[{"@type":"HowToStep","text":"Simmer."}]},{"@type":"Recipe","name":"No Ingredients"}]"#,
    )
    .unwrap();
    std::fs::write(sub.join("notes.txt"), "ignored").unwrap();
    assert_eq!(detect_format(&page).unwrap(), Format::JsonLd);
    let (rs, rep, _) = import(std::slice::from_ref(&page), Format::Auto);
    assert_eq!(rep.imported, 1);
    assert_eq!(rep.skip_reasons["malformed"], 1, "{rep:?}");
    let r = &rs[0];
    assert_eq!(r.title, "Fluffy Pancakes & Syrup");
    assert_eq!(r.instructions, vec!["Mix everything.", "Fry in a hot pan."]);
    assert_eq!((r.total_time_minutes, r.servings), (Some(25), Some(4)));
    assert_eq!(r.tags, vec!["breakfast", "sweet"]);

    let (rs, rep, _) = import(&[dir.path().to_path_buf()], Format::Auto);
    assert_eq!(
        rs.iter().map(|r| r.title.as_str()).collect::<Vec<_>>(),
        vec!["Tomato Soup", "Fluffy Pancakes & Syrup"]
    );
    assert_eq!(rep.skip_reasons["no_ingredients"], 1);
    assert!(rs[0].id.starts_with("recipe-"));
}

#[test]
fn import_into_store_merges_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("recipes.jsonl");
    let src = dir.path().join("a.json");
    std::fs::write(
        &src,
        r#"{"@type":"Recipe","name":"A","recipeIngredient":["1 egg"]}"#,
    )
    .unwrap();
    let rep = import_into_store(
        std::slice::from_ref(&src),
        Format::Auto,
        &store,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rep.imported, 1);
    std::fs::write(
        &src,
        r#"{"@type":"Recipe","name":"B","recipeIngredient":["1 egg"]}"#,
    )
    .unwrap();
    import_into_store(
        std::slice::from_ref(&src),
        Format::Auto,
        &store,
        &mut |_| {},
    )
    .unwrap();
    let titles: Vec<String> = read_jsonl(&store)
        .unwrap()
        .into_iter()
        .map(|r| r.title)
        .collect();
    assert_eq!(titles, vec!["B", "A"]);
    // Re-importing the same recipe replaces it instead of duplicating it.
    import_into_store(&[src], Format::Auto, &store, &mut |_| {}).unwrap();
    assert_eq!(read_jsonl(&store).unwrap().len(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp files left"
    );
}

#[test]
fn bundled_food101_set_reads() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/food101.jsonl");
    if !p.exists() {
        println!("SKIPPED: {} is absent", p.display());
        return;
    }
    let rs = read_jsonl(&p).unwrap();
    assert_eq!(rs.len(), 101);
    assert!(rs
        .iter()
        .all(|r| r.food101_class.is_some() && r.servings.is_some() && r.licence.is_some()));
    assert_eq!(detect_format(&p).unwrap(), Format::Jsonl);
    let (_, rep, _) = import(&[p], Format::Auto);
    assert_eq!((rep.imported, rep.skipped), (101, 0));
}

#[test]
fn format_names_and_undetectable_input() {
    assert_eq!("RecipeNLG".parse::<Format>().unwrap(), Format::RecipeNlg);
    assert_eq!("json-ld".parse::<Format>().unwrap(), Format::JsonLd);
    assert!("xml"
        .parse::<Format>()
        .unwrap_err()
        .to_string()
        .contains("expected auto"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.json");
    std::fs::write(&p, r#"{"hello": "world"}"#).unwrap();
    let err = detect_format(&p).unwrap_err().to_string();
    assert!(
        err.contains("notes.json") && err.contains("--format"),
        "{err}"
    );
    let mut sink = |_r: Recipe| Ok(());
    assert!(import_files(&[p], Format::Auto, &mut sink, &mut |_| {}).is_err());
}
