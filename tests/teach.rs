//! `dishcam teach`, `eval classify` and fused `classify` end to end, on the installed lite pack
//! with a private DISHCAM_HOME (so the taught heads land in a temporary overlay), on photos the
//! test draws: three "dishes" told apart by colour and texture, a fourth added later.

mod common;

use std::process::Output;

use common::*;

type Env = CliEnv;

fn top1(v: &serde_json::Value) -> &str {
    v["top"][0]["label"].as_str().unwrap()
}

#[test]
fn teach_eval_add_a_dish_and_fuse() {
    let env = Env::new();
    let train = env.dir("train");
    photos(&train, &DISHES[..3], 12, 0);
    let t = train.to_str().unwrap();

    // An image head from folders of photos, made the pack's default.
    let v = env.json(&[
        "teach",
        "--images",
        t,
        "--name",
        "soups",
        "--default",
        "--holdout",
        "0.25",
        "--json",
    ]);
    let h = &v["heads"][0];
    assert_eq!(v["schema"], "dishcam.teach/1");
    assert_eq!(h["classes"], 3);
    assert_eq!(h["kind"], "image");
    assert_eq!(
        h["train"].as_u64().unwrap() + h["holdout"].as_u64().unwrap(),
        36
    );
    assert!(h["exemplars"].as_u64().unwrap() >= 3);
    let written = v["written"][0].as_str().unwrap();
    assert!(
        written.starts_with(env.home.path().to_str().unwrap()),
        "taught heads go to the overlay, not the base pack: {written}"
    );

    // New photos of each dish are named by the default head. The drawn "dishes" are colour
    // and texture, not food, so the pack's no-dish check (which runs before any image head) is
    // off for every classify here.
    let fresh = env.dir("fresh");
    photos(&fresh, &DISHES, 2, 100);
    for (name, _) in &DISHES[..3] {
        let p = fresh.join(name).join(format!("{name}_100.png"));
        let c = env.json(&["classify", p.to_str().unwrap(), "--json", "--no-dish-check"]);
        assert_eq!(c["head"], "soups");
        assert_eq!(top1(&c), *name);
    }

    // eval classify on held-out photos.
    let e = env.json(&[
        "eval", "classify", "--data", t, "--split", "holdout", "--json",
    ]);
    assert_eq!(e["schema"], "dishcam.eval.classify/1");
    assert!(e["top1"].as_f64().unwrap() >= 0.9, "{e}");

    // Add a fourth dish from 10 photos: the whole head is refitted on exemplars + new photos.
    let more = env.dir("more");
    photos(&more, &DISHES[3..], 10, 0);
    let v = env.json(&[
        "teach",
        "--add-to",
        "soups",
        "--images",
        more.to_str().unwrap(),
        "--json",
    ]);
    let h = &v["heads"][0];
    assert_eq!(h["classes"], 4);
    assert_eq!(h["added_classes"], serde_json::json!(["corn_chowder"]));
    // The replaced head's files are removed: a device taught every day keeps one copy.
    let overlay_heads: Vec<_> = std::fs::read_dir(env.home.path().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path().join("heads"))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(overlay_heads.len(), 1, "{overlay_heads:?}");
    let soups: Vec<_> = std::fs::read_dir(&overlay_heads[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("soups-"))
        .collect();
    assert_eq!(soups.len(), 1, "{soups:?}");
    for (name, _) in &DISHES {
        let p = fresh.join(name).join(format!("{name}_101.png"));
        let c = env.json(&["classify", p.to_str().unwrap(), "--json", "--no-dish-check"]);
        assert_eq!(top1(&c), *name, "after adding corn_chowder");
    }

    // A text head on labelled titles, then fusion heads on photos paired with titles by class.
    let csv = env.dir("titles.csv");
    let mut rows = String::new();
    let words = [
        (
            "tomato_soup",
            [
                "tomato soup",
                "roasted tomato bisque",
                "creamy tomato soup recipe",
            ],
        ),
        (
            "pea_soup",
            ["split pea soup", "green pea and ham soup", "minty pea soup"],
        ),
        (
            "blueberry_pie",
            [
                "blueberry pie",
                "wild blueberry pie recipe",
                "easy berry pie",
            ],
        ),
        (
            "corn_chowder",
            ["corn chowder", "sweet corn chowder", "bacon corn chowder"],
        ),
    ];
    for (class, titles) in words {
        for i in 0..30 {
            rows += &format!("{class}_{i}.jpg,\"{} #{i}\",{class}\n", titles[i % 3]);
        }
    }
    std::fs::write(&csv, rows).unwrap();
    let titles = csv.to_str().unwrap();
    // Fusion needs the text head's classes in the image head's order (the added dish last).
    let order = env.dir("classes.txt");
    let mut names: Vec<&str> = DISHES[..3].iter().map(|d| d.0).collect();
    names.sort_unstable();
    names.push(DISHES[3].0);
    std::fs::write(&order, names.join("\n")).unwrap();
    let v = env.json(&[
        "teach",
        "--text-csv",
        titles,
        "--classes",
        order.to_str().unwrap(),
        "--name",
        "soup-titles",
        "--default",
        "--json",
    ]);
    assert_eq!(v["heads"][0]["kind"], "text");
    let t4 = env.dir("train4");
    photos(&t4, &DISHES, 12, 0);
    let t4 = t4.to_str().unwrap();
    let v = env.json(&[
        "teach",
        "--images",
        t4,
        "--text-csv",
        titles,
        "--name",
        "soup-fusion",
        "--default",
        "--image-head",
        "soups",
        "--text-head",
        "soup-titles",
        "--json",
    ]);
    assert_eq!(v["heads"][0]["kind"], "early-fusion");
    assert_eq!(v["heads"][1]["kind"], "late-fusion");
    assert!(v["heads"][0]["proxy"]["note"]
        .as_str()
        .unwrap()
        .contains("proxy"));

    // classify PHOTO --text uses the fusion head; --text alone the text head.
    let p = fresh.join("pea_soup/pea_soup_100.png");
    let c = env.json(&[
        "classify",
        p.to_str().unwrap(),
        "--text",
        "split pea soup",
        "--no-dish-check",
        "--json",
    ]);
    assert_eq!(c["head"], "soup-fusion");
    assert_eq!(c["kind"], "early-fusion");
    assert_eq!(top1(&c), "pea_soup");
    let c = env.json(&["classify", "--text", "sweet corn chowder", "--json"]);
    assert_eq!(c["head"], "soup-titles");
    assert_eq!(top1(&c), "corn_chowder");
    let c = env.json(&[
        "classify",
        p.to_str().unwrap(),
        "--text",
        "split pea soup",
        "--head",
        "soup-fusion-late",
        "--no-dish-check",
        "--json",
    ]);
    assert_eq!(top1(&c), "pea_soup");

    // eval on photos and titles paired by class, for the fusion head and the late one.
    for head in ["soup-fusion", "soup-fusion-late"] {
        let e = env.json(&[
            "eval",
            "classify",
            "--data",
            t4,
            "--text-csv",
            titles,
            "--head",
            head,
            "--json",
        ]);
        assert_eq!(e["paired_by_class"], true);
        assert!(e["examples"].as_u64().unwrap() > 0);
        assert!(e["top1"].as_f64().unwrap() >= 0.9, "{head}: {e}");
    }

    // The pack with its overlay still verifies.
    let o = env.run(&["models", "verify", env.pack.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

#[test]
fn bad_teaching_input_is_refused_and_writes_nothing() {
    let env = Env::new();
    // One class only.
    let one = env.dir("one");
    photos(&one, &DISHES[..1], 3, 0);
    fails_with(
        &env.run(&["teach", "--images", one.to_str().unwrap()]),
        "at least 2 classes",
    );
    // Empty class folders.
    let empty = env.dir("empty");
    std::fs::create_dir_all(empty.join("soup")).unwrap();
    std::fs::create_dir_all(empty.join("stew")).unwrap();
    let o = env.run(&["teach", "--images", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    // Unreadable photos are skipped with a count, the rest trains.
    let mixed = env.dir("mixed");
    photos(&mixed, &DISHES[..2], 4, 0);
    std::fs::write(mixed.join("tomato_soup/broken.jpg"), b"not a jpeg").unwrap();
    let o = env.run(&["teach", "--images", mixed.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["heads"][0]["skipped"], 1);
    // A head without exemplars cannot be extended.
    fails_with(
        &env.run(&[
            "teach",
            "--add-to",
            "imagenet",
            "--images",
            mixed.to_str().unwrap(),
        ]),
        "ships no exemplars",
    );
    // Bad holdout.
    fails_with(
        &env.run(&[
            "teach",
            "--images",
            mixed.to_str().unwrap(),
            "--holdout",
            "1.5",
        ]),
        "--holdout",
    );
    // Fusion without a text head in the pack or overlay.
    let csv = env.dir("t.csv");
    std::fs::write(
        &csv,
        "a.jpg,tomato soup,tomato_soup\nb.jpg,pea soup,pea_soup\n",
    )
    .unwrap();
    let o = env.run(&[
        "teach",
        "--images",
        mixed.to_str().unwrap(),
        "--text-csv",
        csv.to_str().unwrap(),
        "--text-head",
        "nope",
    ]);
    fails_with(&o, "no head 'nope'");
}

#[test]
fn recipes_import_search_show_and_classify_suggestions() {
    let env = Env::new();
    // The bundled recipes, indexed in the private overlay.
    let v = env.json(&["recipes", "index", "build", "--json"]);
    assert_eq!(v["recipes"], 101);
    let v = env.json(&["recipes", "search", "apple pie", "--top", "3", "--json"]);
    assert_eq!(v["hits"][0]["id"], "food101-apple_pie", "{v}");
    // Filters on normalised ingredients: no peanut recipe survives --exclude peanut.
    let v = env.json(&[
        "recipes",
        "search",
        "pad thai noodles",
        "--top",
        "10",
        "--exclude",
        "peanut",
        "--json",
    ]);
    let ids: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"food101-pad_thai"), "{ids:?}");
    // The exact search is the reference: the IVF path agrees on the top hit.
    let exact = env.json(&["recipes", "search", "miso soup", "--exact", "--json"]);
    let fast = env.json(&["recipes", "search", "miso soup", "--json"]);
    assert_eq!(exact["hits"][0]["id"], fast["hits"][0]["id"]);
    let r = env.json(&["recipes", "show", "food101-ramen", "--json"]);
    assert_eq!(r["food101_class"], "ramen");
    assert!(!r["ingredients"].as_array().unwrap().is_empty());

    // A schema.org page imports into the overlay, with the bad block counted, and is found.
    let page = env.dir("page.html");
    std::fs::write(
        &page,
        r#"<html><head><script type="application/ld+json">
{"@context": "https://schema.org", "@type": "Recipe", "name": "Smoky Chipotle Lentil Chili",
 "recipeIngredient": ["2 cups lentils", "1 chipotle pepper", "1 can tomatoes"],
 "recipeInstructions": [{"@type": "HowToStep", "text": "Simmer everything for 40 minutes."}]}
</script><script type="application/ld+json">{ broken </script></head></html>"#,
    )
    .unwrap();
    let v = env.json(&["recipes", "import", page.to_str().unwrap(), "--json"]);
    assert_eq!(v["imported"], 1, "{v}");
    assert_eq!(v["indexed"], 102);
    let v = env.json(&["recipes", "search", "lentil chili", "--top", "1", "--json"]);
    assert_eq!(v["hits"][0]["title"], "Smoky Chipotle Lentil Chili");

    // Real sample files import with the right counts.
    if let Some(data) = shared_data("recipes_import") {
        let l1 = data.join("recipe1m-sample/layer1.json");
        let v = env.json(&["recipes", "import", l1.to_str().unwrap(), "--json"]);
        assert_eq!(
            (v["imported"].as_u64(), v["skipped"].as_u64()),
            (Some(98), Some(0))
        );
        let nlg = data.join("recipenlg-sample/RecipeNLG_dataset.csv");
        let v = env.json(&["recipes", "import", nlg.to_str().unwrap(), "--json"]);
        assert_eq!(
            (v["imported"].as_u64(), v["skipped"].as_u64()),
            (Some(49), Some(0))
        );
        assert_eq!(v["indexed"], 101 + 1 + 98 + 49);
    }

    // classify lists recipes for the predicted dish.
    let photo_path = env.dir("p.png");
    photo(&photo_path, [200, 40, 30], 1);
    let c = env.json(&[
        "classify",
        photo_path.to_str().unwrap(),
        "--json",
        "--no-dish-check",
    ]);
    let dish = top1(&c).to_string();
    assert_eq!(c["recipes"][0]["id"], format!("food101-{dish}"), "{c}");

    // A truncated index is refused with the rebuild command (flipped bytes in every section are
    // covered by dishcam-recipes' own tests).
    let idx = std::fs::read_dir(env.home.path().join("overlays"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("recipes/recipes.idx");
    let bytes = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = env.run(&["recipes", "search", "apple pie"]);
    fails_with(&o, "dishcam recipes index build");
}
