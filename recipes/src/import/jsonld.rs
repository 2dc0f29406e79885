//! schema.org `Recipe` in JSON-LD, as recipe pages embed it in `<script type="application/ld+json">`.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::model::{content_id, source_id, Recipe};
use crate::text::{clean_ws, decode_text};

/// Licence note attached to recipes imported from web pages.
pub const WEB_LICENCE: &str =
    "imported from a web page for personal use; copyright of the publisher";

/// Returns the contents of every `<script ... type="application/ld+json" ...>` element of an HTML page.
///
/// Written by hand rather than with an HTML parser crate: only this one element type is needed, its
/// content is raw text (no entities, no nested tags, ends at the first `</script`), and a full HTML5
/// parser would be a large dependency for a scan of tags.
pub fn extract_jsonld_blocks(html: &str) -> Vec<&str> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<script").map(|i| i + pos) {
        let Some(tag_end) = lower[start..].find('>').map(|i| i + start) else {
            break;
        };
        let tag = &lower[start..tag_end];
        let body_start = tag_end + 1;
        let Some(body_end) = lower[body_start..].find("</script").map(|i| i + body_start) else {
            break;
        };
        if tag.contains("application/ld+json") {
            out.push(&html[body_start..body_end]);
        }
        pos = body_end + 8;
    }
    out
}

/// Finds every `Recipe` node in a JSON-LD value (top-level object, array, `@graph`, or nested such as
/// `mainEntity`), with `@type` given as a string or an array.
pub fn recipes_from_jsonld(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    walk(v, &mut out, 0);
    out
}

fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 32 {
        return;
    }
    match v {
        Value::Array(a) => a.iter().for_each(|x| walk(x, out, depth + 1)),
        Value::Object(o) => {
            if is_recipe_type(o.get("@type")) {
                out.push(v);
                return;
            }
            o.values().for_each(|x| walk(x, out, depth + 1));
        }
        _ => {}
    }
}

fn is_recipe_type(t: Option<&Value>) -> bool {
    let is = |s: &str| s == "Recipe" || s.ends_with("/Recipe") || s.ends_with(":Recipe");
    match t {
        Some(Value::String(s)) => is(s),
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str().is_some_and(is)),
        _ => false,
    }
}

/// Parses an ISO-8601 duration such as `PT1H30M`, `P1DT2H`, `PT90M`, `PT0.5H` into whole minutes
/// (rounded). `None` if it is not a duration.
pub fn parse_iso8601_minutes(s: &str) -> Option<u32> {
    let s = s.trim();
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    let mut minutes = 0f64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' => in_time = true,
            d if d.is_ascii_digit() || d == '.' || d == ',' => {
                num.push(if d == ',' { '.' } else { d })
            }
            unit => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                any = true;
                minutes += n * match (unit, in_time) {
                    ('W', false) => 7.0 * 1440.0,
                    ('D', false) => 1440.0,
                    ('H', true) => 60.0,
                    ('M', true) => 1.0,
                    ('S', true) => 1.0 / 60.0,
                    ('Y', false) | ('M', false) => return None,
                    _ => return None,
                };
            }
        }
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(minutes.round() as u32)
}

/// Decodes the HTML entities and strips the tags some sites leave in JSON-LD text.
fn clean_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with('<') {
            match tail.find('>') {
                Some(j) => {
                    out.push(' ');
                    rest = &tail[j + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
            continue;
        }
        let end = tail.find(';').filter(|&j| j <= 10);
        let decoded = end.and_then(|j| {
            let ent = &tail[1..j];
            let ch = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, j))
        });
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &tail[j + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    clean_ws(&out)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![clean_html(s)],
        Some(Value::Array(a)) => a.iter().flat_map(|x| strings(Some(x))).collect(),
        Some(Value::Number(n)) => vec![n.to_string()],
        Some(Value::Object(o)) => strings(
            o.get("name")
                .or_else(|| o.get("text"))
                .or_else(|| o.get("url")),
        ),
        _ => Vec::new(),
    }
}

fn first_string(v: Option<&Value>) -> Option<String> {
    strings(v).into_iter().find(|s| !s.is_empty())
}

/// Steps from `recipeInstructions`: a string (split on line breaks), a list of strings, `HowToStep`s
/// (`text`, else `name`), `HowToSection`s / `ItemList`s (`itemListElement`, recursively).
fn instructions(v: Option<&Value>, out: &mut Vec<String>) {
    match v {
        Some(Value::String(s)) => {
            let s = s
                .replace("<br>", "\n")
                .replace("<br/>", "\n")
                .replace("<br />", "\n")
                .replace("</p>", "\n")
                .replace("</li>", "\n");
            out.extend(s.lines().map(clean_html).filter(|l| !l.is_empty()));
        }
        Some(Value::Array(a)) => a.iter().for_each(|x| instructions(Some(x), out)),
        Some(Value::Object(o)) => {
            if let Some(items) = o.get("itemListElement") {
                instructions(Some(items), out);
            } else if let Some(t) = o.get("text").or_else(|| o.get("name")) {
                instructions(Some(t), out);
            }
        }
        _ => {}
    }
}

fn keywords(v: Option<&Value>) -> Vec<String> {
    strings(v)
        .iter()
        .flat_map(|s| {
            s.split(',')
                .map(|k| k.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|k| !k.is_empty())
        .collect()
}

/// Converts one schema.org `Recipe` node into a [`Recipe`] (not validated yet).
pub(crate) fn recipe_from_node(node: &Value) -> Recipe {
    let get = |k: &str| node.get(k);
    let title = first_string(get("name").or_else(|| get("headline"))).unwrap_or_default();
    let mut ingredients = strings(get("recipeIngredient"));
    if ingredients.is_empty() {
        ingredients = strings(get("ingredients"));
    }
    let mut steps = Vec::new();
    instructions(get("recipeInstructions"), &mut steps);
    let total = get("totalTime")
        .and_then(Value::as_str)
        .and_then(parse_iso8601_minutes)
        .or_else(|| {
            let p = get("prepTime")
                .and_then(Value::as_str)
                .and_then(parse_iso8601_minutes);
            let c = get("cookTime")
                .and_then(Value::as_str)
                .and_then(parse_iso8601_minutes);
            match (p, c) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
            }
        });
    let yields = strings(get("recipeYield"));
    let (servings, yield_text) = parse_yield(&yields);
    let mut cuisines = keywords(get("recipeCuisine"));
    let cuisine = if cuisines.is_empty() {
        None
    } else {
        Some(cuisines.remove(0))
    };
    let mut tags = cuisines;
    tags.extend(keywords(get("recipeCategory")));
    tags.extend(keywords(get("keywords")));
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.to_lowercase()));
    let url = first_string(get("url"))
        .or_else(|| first_string(get("@id")))
        .filter(|u| u.contains("://"));
    let id = match &url {
        Some(u) => source_id("web", &hex::encode(&Sha256::digest(u.as_bytes())[..8])),
        None => content_id(&title, &ingredients),
    };
    let source = first_string(get("publisher"))
        .or_else(|| first_string(get("author")))
        .or_else(|| {
            url.as_deref()
                .and_then(|u| u.split("://").nth(1))
                .and_then(|h| h.split('/').next())
                .map(str::to_string)
        });
    Recipe {
        id,
        title,
        ingredients,
        instructions: steps,
        tags,
        cuisine,
        servings,
        yield_text,
        total_time_minutes: total,
        source,
        url,
        licence: Some(WEB_LICENCE.into()),
        images: strings(get("image"))
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        food101_class: None,
    }
}

/// `recipeYield` may be `4`, `"4"`, `"4 servings"`, `"Serves 4-6"`, `["4", "4 servings"]`,
/// `"24 cookies"`: servings is the first number when the text is a bare number or mentions
/// serving(s)/serves/people/portions; otherwise the text is kept as the yield.
fn parse_yield(yields: &[String]) -> (Option<u32>, Option<String>) {
    let mut text = None;
    for y in yields {
        let lower = y.to_lowercase();
        let num: String = lower
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let bare = lower.trim().chars().all(|c| c.is_ascii_digit());
        let about_people = ["serving", "serves", "people", "portion", "person"]
            .iter()
            .any(|w| lower.contains(w));
        if let (Ok(n), true) = (num.parse::<u32>(), bare || about_people) {
            return (Some(n), None);
        }
        if text.is_none() && !y.is_empty() {
            text = Some(y.clone());
        }
    }
    (None, text)
}

/// Imports the recipes of one `.json`/`.jsonld`/`.html` file: the file is parsed as JSON, else its
/// `ld+json` script blocks are. A block that is not JSON is one malformed record.
pub(crate) fn import_jsonld_bytes(path: &Path, bytes: &[u8], ctx: &mut Ctx) {
    let text = decode_text(bytes);
    let blocks: Vec<&str> = match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        Ok(_) => vec![&text],
        Err(_) => extract_jsonld_blocks(&text),
    };
    let mut n = 0u64;
    let mut found = false;
    for (bi, block) in blocks.iter().enumerate() {
        match serde_json::from_str::<Value>(block.trim()) {
            Ok(v) => {
                for node in recipes_from_jsonld(&v) {
                    found = true;
                    n += 1;
                    if !ctx.accept(n, recipe_from_node(node)) {
                        return;
                    }
                }
            }
            Err(e) => {
                n += 1;
                ctx.malformed(n, format!("ld+json block {} is not JSON: {e}", bi + 1));
            }
        }
    }
    if !found && n == 0 {
        ctx.malformed(1, format!("{}: no schema.org Recipe found", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_iso8601_minutes("PT1H30M"), Some(90));
        assert_eq!(parse_iso8601_minutes("P1DT2H"), Some(1560));
        assert_eq!(parse_iso8601_minutes("PT0.5H"), Some(30));
        assert_eq!(parse_iso8601_minutes("PT45S"), Some(1));
        assert_eq!(parse_iso8601_minutes("1 hour"), None);
        assert_eq!(parse_iso8601_minutes("P"), None);
    }

    #[test]
    fn yields() {
        assert_eq!(parse_yield(&["4".into()]), (Some(4), None));
        assert_eq!(parse_yield(&["Serves 4-6".into()]), (Some(4), None));
        assert_eq!(
            parse_yield(&["24 cookies".into()]),
            (None, Some("24 cookies".into()))
        );
    }

    #[test]
    fn html_cleaning_and_blocks() {
        assert_eq!(
            clean_html("Mac &amp; cheese&#39;s <b>best</b>"),
            "Mac & cheese's best"
        );
        let html = r#"<html><script>var x=1;</script><SCRIPT type="application/ld+json" class=y>{"a":1}</SCRIPT><script type='application/ld+json'>[2]</script>"#;
        assert_eq!(extract_jsonld_blocks(html), vec![r#"{"a":1}"#, "[2]"]);
    }

    #[test]
    fn graph_sections_and_types() {
        let v: Value = serde_json::from_str(
            r#"{"@context":"https://schema.org","@graph":[{"@type":"WebPage"},
            {"@type":["Recipe","NewsArticle"],"name":"Pad Thai","url":"https://example.org/pad-thai",
             "recipeIngredient":["200 g rice noodles","2 tbsp peanuts"],
             "recipeInstructions":[{"@type":"HowToSection","name":"Prep","itemListElement":[{"@type":"HowToStep","text":"Soak noodles."}]},
                                   {"@type":"HowToStep","name":"Fry."}, "Serve."],
             "totalTime":"PT40M","recipeYield":["2","2 servings"],"recipeCuisine":["Thai","Asian"],
             "keywords":"noodles, quick","image":{"@type":"ImageObject","url":"https://example.org/p.jpg"}}]}"#,
        )
        .unwrap();
        let nodes = recipes_from_jsonld(&v);
        assert_eq!(nodes.len(), 1);
        let r = recipe_from_node(nodes[0]);
        assert_eq!(r.title, "Pad Thai");
        assert_eq!(r.instructions, vec!["Soak noodles.", "Fry.", "Serve."]);
        assert_eq!(r.total_time_minutes, Some(40));
        assert_eq!(r.servings, Some(2));
        assert_eq!(r.cuisine.as_deref(), Some("Thai"));
        assert_eq!(r.tags, vec!["Asian", "noodles", "quick"]);
        assert_eq!(r.images, vec!["https://example.org/p.jpg"]);
        assert!(r.id.starts_with("web-"));
        assert_eq!(r.source.as_deref(), Some("example.org"));
    }
}
