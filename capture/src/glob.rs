//! File-name globbing for `dir://DIR/*.jpg`.
//!
//! Hand-written on purpose (a glob crate is not worth a dependency for this): `*` matches any run
//! of characters, `?` exactly one, everything else itself, case-sensitively, within one file name.

/// Whether `name` matches `pattern` (`*` and `?` wildcards only).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it currently stands in for; on a mismatch the star
    // swallows one more character. One backtrack point is enough for `*`-only patterns.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            star = Some((sp, sn + 1));
            pi = sp + 1;
            ni = sn + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_and_question_marks() {
        assert!(glob_match("*.jpg", "a.jpg"));
        assert!(glob_match("*.jpg", ".jpg"));
        assert!(!glob_match("*.jpg", "a.jpeg"));
        assert!(!glob_match("*.jpg", "a.JPG"));
        assert!(glob_match("img_??.png", "img_01.png"));
        assert!(!glob_match("img_??.png", "img_1.png"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a*b*c", "abcbc"));
        assert!(!glob_match("a*b*c", "abcb"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**x", "yyx"));
        assert!(!glob_match("", "a"));
    }
}
