//! RecipeNLG CSV: `,title,ingredients,directions,link,source,NER`, list columns as JSON string arrays
//! (`["1 c. sugar", "2 eggs"]`). Rows are read as bytes and each field decoded on its own (UTF-8, else
//! Latin-1), so one bad row never stops the import.

use std::io::Read;

use super::Ctx;
use crate::error::{RecipeError, Result};
use crate::model::{content_id, source_id, Recipe};
use crate::text::decode_text;

/// Licence note attached to RecipeNLG recipes.
pub const RECIPENLG_LICENCE: &str =
    "RecipeNLG: non-commercial research and educational use under its terms";

struct Cols {
    index: Option<usize>,
    title: usize,
    ingredients: usize,
    directions: Option<usize>,
    link: Option<usize>,
    source: Option<usize>,
}

pub(crate) fn import_csv<R: Read>(rd: R, ctx: &mut Ctx) -> Result<()> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(rd);
    let headers = csv.byte_headers().map_err(|e| csv_err(ctx, e))?.clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| decode_text(h).trim().to_ascii_lowercase())
        .collect();
    let find = |n: &str| names.iter().position(|h| h == n);
    let (Some(title), Some(ingredients)) = (find("title"), find("ingredients")) else {
        return Err(RecipeError::Format {
            path: ctx.file.clone(),
            message: format!(
                "CSV header has no `title` and `ingredients` columns (found: {})",
                names.join(",")
            ),
        });
    };
    let cols = Cols {
        index: find("")
            .or_else(|| find("id"))
            .or_else(|| find("unnamed: 0")),
        title,
        ingredients,
        directions: find("directions").or_else(|| find("instructions")),
        link: find("link").or_else(|| find("url")),
        source: find("source"),
    };
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        match csv.read_byte_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                n += 1;
                let field = |i: usize| rec.get(i).map(|b| decode_text(b).into_owned());
                let Some(title) = field(cols.title) else {
                    ctx.malformed(n, format!("row {n}: only {} fields", rec.len()));
                    continue;
                };
                let ingredients = match field(cols.ingredients).map(|s| parse_list(&s)) {
                    Some(Some(l)) => l,
                    _ => {
                        ctx.malformed(n, format!("row {n}: ingredients column is not a list"));
                        continue;
                    }
                };
                let instructions = match cols.directions.and_then(field).map(|s| parse_list(&s)) {
                    Some(Some(l)) => l,
                    None => Vec::new(),
                    Some(None) => {
                        ctx.malformed(n, format!("row {n}: directions column is not a list"));
                        continue;
                    }
                };
                let index = cols.index.and_then(field).filter(|s| !s.trim().is_empty());
                let id = match &index {
                    Some(i) => source_id("recipenlg", i),
                    None => content_id(&title, &ingredients),
                };
                let src = cols.source.and_then(field).filter(|s| !s.is_empty());
                let r = Recipe {
                    id,
                    title,
                    ingredients,
                    instructions,
                    source: Some(match src {
                        Some(s) => format!("RecipeNLG ({s})"),
                        None => "RecipeNLG".into(),
                    }),
                    url: cols.link.and_then(field).filter(|s| !s.is_empty()),
                    licence: Some(RECIPENLG_LICENCE.into()),
                    ..Default::default()
                };
                if !ctx.accept(n, r) {
                    return Ok(());
                }
            }
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(csv_err(ctx, e));
                }
                n += 1;
                ctx.malformed(n, format!("row {n}: {e}"));
            }
        }
    }
}

fn csv_err(ctx: &Ctx, e: csv::Error) -> RecipeError {
    RecipeError::Format {
        path: ctx.file.clone(),
        message: e.to_string(),
    }
}

/// Parses a list column: a JSON array of strings, else a Python-style list with single or double
/// quotes (some exports), else `None`.
pub(crate) fn parse_list(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
        return Some(v);
    }
    let inner = t.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(q) = chars.next() else {
            return Some(out);
        };
        if q != '"' && q != '\'' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => item.push(chars.next()?),
                c if c == q => break,
                c => item.push(c),
            }
        }
        out.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_list;

    #[test]
    fn list_columns() {
        assert_eq!(
            parse_list(r#"["a", "b \"c\""]"#).unwrap(),
            vec!["a", "b \"c\""]
        );
        assert_eq!(parse_list("['a', \"it's\"]").unwrap(), vec!["a", "it's"]);
        assert_eq!(parse_list("[]").unwrap(), Vec::<String>::new());
        assert!(parse_list("not a list").is_none());
        assert!(parse_list("['unterminated]").is_none());
    }
}
