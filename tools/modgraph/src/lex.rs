//! Just enough of Rust's lexical grammar to find paths: comments and literals are skipped, paths
//! (with `use` groups expanded) are returned with their line and the inline modules around them.

/// One token: an identifier, `::`, or a single punctuation character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// An identifier or keyword.
    Ident(String),
    /// `::`.
    Colons,
    /// Any other character that is not white space.
    Punct(char),
}

/// Tokens of `text` with their (1-based) lines; comments, strings, chars and numbers are left out.
pub fn tokens(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                if next == Some('\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    // A lifetime or label.
                    out.push((Token::Punct('\''), line));
                    i += 1;
                }
            }
            ':' if next == Some(':') => {
                out.push((Token::Colons, line));
                i += 2;
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
            c if is_ident(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // Raw strings: r"…", r#"…"#, br#"…"#.
                let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
                if (word == "r" || word == "br") && chars.get(i + hashes) == Some(&'"') {
                    i += hashes + 1;
                    while i < chars.len() {
                        if chars[i] == '"'
                            && chars[i + 1..].iter().take_while(|&&c| c == '#').count() >= hashes
                        {
                            i += 1 + hashes;
                            break;
                        }
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                if word == "r" && hashes == 1 && chars.get(i + 1).is_some_and(|&c| is_ident(c)) {
                    // A raw identifier: r#type.
                    i += 1;
                    continue;
                }
                out.push((Token::Ident(word), line));
            }
            c if c.is_whitespace() => i += 1,
            c => {
                out.push((Token::Punct(c), line));
                i += 1;
            }
        }
    }
    out
}

/// A path found in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its segments, `use` groups expanded (`crate::a::{b, c}` gives two paths); a glob ends at
    /// the module it globs.
    pub segments: Vec<String>,
    /// Line of its first segment.
    pub line: usize,
    /// Inline modules (`mod tests { … }`) it stands in, outermost first.
    pub inline: Vec<String>,
    /// Whether `::` or `.` stands before it (then it is no path from a root).
    pub after_colons: bool,
}

/// Every path of two or more segments in `text`.
pub fn paths(text: &str) -> Vec<Found> {
    let toks = tokens(text);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Token::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|&(_, d)| d > depth) {
                    inline.pop();
                }
                i += 1;
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some((Token::Ident(name), _)), Some((Token::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Token::Ident(first) if matches!(toks.get(i + 1), Some((Token::Colons, _))) => {
                let after_colons = i > 0
                    && matches!(
                        toks[i - 1].0,
                        Token::Colons | Token::Punct('.') | Token::Punct('$')
                    );
                let line = toks[i].1;
                let mut expanded = Vec::new();
                let end = tree(&toks, i + 2, vec![first.clone()], &mut expanded);
                let here: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                for segments in expanded {
                    out.push(Found {
                        segments,
                        line,
                        inline: here.clone(),
                        after_colons,
                    });
                }
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads the rest of a path after `prefix::` starting at `at`; returns the index after it.
fn tree(
    toks: &[(Token, usize)],
    mut at: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(at).map(|t| &t.0) {
            Some(Token::Ident(seg)) => {
                prefix.push(seg.clone());
                at += 1;
                if matches!(toks.get(at), Some((Token::Colons, _))) {
                    at += 1;
                    continue;
                }
                out.push(prefix);
                return at;
            }
            Some(Token::Punct('{')) => {
                at += 1;
                loop {
                    match toks.get(at).map(|t| &t.0) {
                        Some(Token::Punct('}')) => return at + 1,
                        Some(Token::Punct(',')) => at += 1,
                        Some(Token::Punct('*')) => {
                            out.push(prefix.clone());
                            at += 1;
                        }
                        Some(Token::Ident(s)) if s == "self" => {
                            out.push(prefix.clone());
                            at += 1;
                        }
                        Some(Token::Ident(_)) => {
                            at = tree(toks, at, prefix.clone(), out);
                        }
                        Some(_) => at += 1,
                        None => return at,
                    }
                }
            }
            Some(Token::Punct('*')) => {
                out.push(prefix);
                return at + 1;
            }
            _ => {
                // A turbofish or anything else ends the path at the module so far.
                out.push(prefix);
                return at;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(text: &str) -> Vec<String> {
        paths(text)
            .into_iter()
            .map(|f| f.segments.join("::"))
            .collect()
    }

    #[test]
    fn expands_use_groups_and_skips_literals() {
        assert_eq!(
            segs("use crate::{a, b::{c, self}, d::*};\n// crate::no\nlet s = \"crate::no\";"),
            ["crate::a", "crate::b::c", "crate::b", "crate::d"]
        );
        assert_eq!(
            segs("let x = r#\"crate::no\"#; crate::yes::f()"),
            ["crate::yes::f"]
        );
        assert_eq!(
            segs("fn f<'a>(c: char) { let q = '\"'; crate::x::y(); }"),
            ["crate::x::y"]
        );
    }

    #[test]
    fn knows_inline_modules_and_lines() {
        let found = paths("use super::a;\nmod tests {\n    use super::b;\n}\nuse super::c;");
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.segments.join("::"), f.line, f.inline.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("super::a".to_string(), 1, vec![]),
                ("super::b".to_string(), 3, vec!["tests".to_string()]),
                ("super::c".to_string(), 5, vec![]),
            ]
        );
    }
}
