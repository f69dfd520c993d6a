//! Go's `%q` and error-aggregate formatting, so messages read byte for byte
//! like kube-apiserver's.

use std::fmt::Write as _;

/// A string quoted like Go's `strconv.Quote` (`%q`).
///
/// Control characters are escaped the way Go does; other characters are kept
/// (Go also escapes a few non-control, non-printable code points such as
/// U+00AD, which do not occur in Kubernetes names).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of strings formatted like Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(" "))
}

/// Error messages joined like `utilerrors.NewAggregate(errs).Error()`: one
/// message alone, several deduplicated in `[a, b]`, none as `""`.
pub fn aggregate<S: AsRef<str>>(messages: &[S]) -> String {
    match messages {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        many => {
            let mut seen: Vec<&str> = Vec::with_capacity(many.len());
            for m in many {
                if !seen.contains(&m.as_ref()) {
                    seen.push(m.as_ref());
                }
            }
            if let [only] = seen.as_slice() {
                (*only).to_owned()
            } else {
                format!("[{}]", seen.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote("jane"), r#""jane""#);
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("a\nb\t\u{1}"), r#""a\nb\t\x01""#);
        assert_eq!(quote("ünï"), "\"ünï\"");
        assert_eq!(quote_list::<&str>(&[]), "[]");
        assert_eq!(quote_list(&["", "apps"]), r#"["" "apps"]"#);
    }

    #[test]
    fn aggregates_like_utilerrors() {
        assert_eq!(aggregate::<&str>(&[]), "");
        assert_eq!(aggregate(&["a"]), "a");
        assert_eq!(aggregate(&["a", "a"]), "a");
        assert_eq!(aggregate(&["a", "b", "a"]), "[a, b]");
    }
}
