//! Labelled image sets in the Food-101 layout (one folder per class), the hold-out split, and
//! the degradation that matches Food-101's 64 px set.

use std::path::{Path, PathBuf};

/// One photo with its class (the folder name) and id (the file stem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    pub path: PathBuf,
    pub class: String,
    pub id: String,
}

/// Errors reading a folder-per-class image set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    #[error("{0}: cannot read the image set ({1}); pass a directory with one folder per class")]
    Io(String, std::io::Error),
    #[error("{0}: no class folders; pass a directory with one folder per class (Food-101 layout: DIR/<class>/<id>.jpg)")]
    NoClasses(String),
    #[error("{dir}: class folder '{class}' holds no files; add photos or remove the folder")]
    EmptyClass { dir: String, class: String },
}

/// Lists `dir/<class>/<file>` in sorted order. Hidden files and folders are ignored.
pub fn list_class_folders(dir: &Path) -> Result<Vec<LabelledImage>, DatasetError> {
    let name = dir.display().to_string();
    let read = |d: &Path| -> Result<Vec<PathBuf>, DatasetError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|e| DatasetError::Io(d.display().to_string(), e))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    let mut classes = 0;
    for class_dir in read(dir)?.into_iter().filter(|p| p.is_dir()) {
        classes += 1;
        let class = class_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let files: Vec<PathBuf> = read(&class_dir)?
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            return Err(DatasetError::EmptyClass { dir: name, class });
        }
        for path in files {
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            out.push(LabelledImage {
                path,
                class: class.clone(),
                id,
            });
        }
    }
    if classes == 0 {
        return Err(DatasetError::NoClasses(name));
    }
    Ok(out)
}

/// Whether photo `id` belongs to the hold-out (validation) split of size `fraction`: decided by
/// a hash of the id alone, so the same photo is held out in every copy of the data set (Food-101's
/// 64 px set and its full-size photos share ids).
pub fn is_holdout(id: &str, fraction: f64) -> bool {
    (stable_hash(id) % 10_000) < (fraction.clamp(0.0, 1.0) * 10_000.0).round() as u64
}

/// 64-bit FNV-1a of a string: the same on every machine and run (unlike `std`'s hasher).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Which titles pair with which photos in the class-paired proxy (there are no real UPMC
/// image/title pairs here): titles outside the text head's training split (`is_holdout(id,
/// holdout)`) are halved by a second hash into a pool for training photos and a pool for
/// held-out photos, so no title is seen by the text head, and no title pairs with both a training
/// and a held-out photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairPool {
    /// Titles that pair with training photos.
    Train,
    /// Titles that pair with held-out photos.
    Holdout,
}

/// The pool a title belongs to, or `None` when the text head trained on it.
pub fn title_pool(id: &str, holdout: f64) -> Option<PairPool> {
    if !is_holdout(id, holdout) {
        return None;
    }
    Some(if is_holdout(&format!("{id}#pair"), 0.5) {
        PairPool::Holdout
    } else {
        PairPool::Train
    })
}

/// Picks a title for a photo: one of `candidates` (the titles of the photo's class in the photo's
/// pool), chosen by a hash of the photo id, so the pairing is the same on every run.
pub fn pick_title<'a, T>(photo_id: &str, candidates: &'a [T]) -> Option<&'a T> {
    if candidates.is_empty() {
        return None;
    }
    candidates.get((stable_hash(photo_id) % candidates.len() as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_classes_in_order_and_refuses_empty_ones() {
        let d = tempfile::tempdir().unwrap();
        for (c, f) in [("b_soup", "2.jpg"), ("a_pie", "9.jpg"), ("a_pie", "1.jpg")] {
            std::fs::create_dir_all(d.path().join(c)).unwrap();
            std::fs::write(d.path().join(c).join(f), b"x").unwrap();
        }
        let v = list_class_folders(d.path()).unwrap();
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|i| (i.class.as_str(), i.id.as_str()))
            .collect();
        assert_eq!(got, [("a_pie", "1"), ("a_pie", "9"), ("b_soup", "2")]);
        std::fs::create_dir_all(d.path().join("c_empty")).unwrap();
        let e = list_class_folders(d.path()).unwrap_err().to_string();
        assert!(e.contains("c_empty"), "{e}");
        let none = tempfile::tempdir().unwrap();
        assert!(matches!(
            list_class_folders(none.path()),
            Err(DatasetError::NoClasses(_))
        ));
    }

    #[test]
    fn holdout_is_stable_and_close_to_its_fraction() {
        let ids: Vec<String> = (0..20_000)
            .map(|i| format!("{}", 1_000_000 + i * 37))
            .collect();
        let n = ids.iter().filter(|i| is_holdout(i, 0.2)).count();
        assert!((3_600..4_400).contains(&n), "{n}");
        assert_eq!(is_holdout("1005649", 0.2), is_holdout("1005649", 0.2));
        assert!(!is_holdout("x", 0.0) && is_holdout("x", 1.0));
    }
}

/// One labelled text: UPMC Food-101's `image_name,page_title,label` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledText {
    pub id: String,
    pub text: String,
    pub class: String,
}

/// Reads a headerless `id,text,label` CSV. Malformed rows (wrong field count, broken quoting,
/// empty text or label) are skipped and counted in the second value, never fatal.
pub fn read_text_csv(path: &Path) -> Result<(Vec<LabelledText>, usize), DatasetError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| DatasetError::Io(name.clone(), e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut rows = Vec::new();
    let mut skipped = 0;
    for record in reader.byte_records() {
        let Ok(r) = record else {
            skipped += 1;
            continue;
        };
        let field = |i: usize| {
            r.get(i)
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
        };
        match (r.len(), field(0), field(1), field(2)) {
            (3, Some(id), Some(text), Some(class)) if !text.is_empty() && !class.is_empty() => {
                rows.push(LabelledText { id, text, class })
            }
            _ => skipped += 1,
        }
    }
    if rows.is_empty() {
        return Err(DatasetError::NoClasses(name));
    }
    Ok((rows, skipped))
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn title_pools_are_disjoint_and_stable() {
        let ids: Vec<String> = (0..2000).map(|i| format!("t_{i}.jpg")).collect();
        let pools: Vec<_> = ids.iter().map(|i| title_pool(i, 0.2)).collect();
        let trained = pools.iter().filter(|p| p.is_none()).count();
        let held = pools
            .iter()
            .filter(|p| **p == Some(PairPool::Holdout))
            .count();
        // ~80 % train the text head; the rest is split about evenly.
        assert!((1500..1700).contains(&trained), "{trained}");
        assert!((120..280).contains(&held), "{held}");
        for (id, p) in ids.iter().zip(&pools) {
            assert_eq!(p.is_none(), !is_holdout(id, 0.2));
            assert_eq!(*p, title_pool(id, 0.2));
        }
        let c = ["a", "b", "c"];
        assert_eq!(pick_title("photo1", &c), pick_title("photo1", &c));
        assert_eq!(pick_title::<&str>("photo1", &[]), None);
    }

    #[test]
    fn reads_quoted_titles_and_counts_bad_rows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.csv");
        let bytes = b"a_1.jpg,\"Pie, with apples\",apple_pie\nbroken\nb_2.jpg,Soup \xff time,miso_soup\nc_3.jpg,,miso_soup\n";
        std::fs::write(&p, bytes).unwrap();
        let (rows, skipped) = read_text_csv(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "Pie, with apples");
        assert_eq!(rows[1].class, "miso_soup");
        assert!(
            rows[1].text.starts_with("Soup "),
            "non-UTF-8 bytes are replaced, not fatal"
        );
        assert_eq!(skipped, 2);
    }
}
