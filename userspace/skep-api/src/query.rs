//! Query parameters read the way kube-apiserver converts `url.Values` into
//! its option structs (`apimachinery/pkg/runtime/conversion.go`, the
//! generated `meta/v1` conversions): the first value of a name counts; a
//! boolean is false only when absent, `0`, or `false` in any case (so the
//! Python client's `True` and even `yes` are true); an integer is Go's
//! `strconv.ParseInt(s, 10, 64)`, whose error text is the `BadRequest`
//! message.

use crate::status::ApiError;

/// A request's query parameters, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from decoded `(name, value)` pairs.
    #[must_use]
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// Every `(name, value)` pair, in order.
    #[must_use]
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `name` (what upstream's conversions read).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (`dryRun` is a list).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter, false when absent (`Convert_Slice_string_To_bool`).
    #[must_use]
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(parse_bool)
    }

    /// A `*bool` parameter: `None` when absent
    /// (`Convert_Slice_string_To_Pointer_bool`).
    #[must_use]
    pub fn optional_flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(parse_bool)
    }

    /// An `int64` parameter, `None` when absent; a value Go's `ParseInt`
    /// refuses is a `BadRequest` with Go's message.
    pub fn int64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| parse_int64(v).map_err(|e| ApiError::bad_request(e.to_string())))
            .transpose()
    }

    /// Whether `dryRun` asks for a dry run (`dryRun=All`).
    #[must_use]
    pub fn dry_run(&self) -> bool {
        self.values("dryRun").any(|v| v == DRY_RUN_ALL)
    }
}

/// The one value of `dryRun` kube-apiserver accepts.
pub const DRY_RUN_ALL: &str = "All";

/// A query boolean as upstream converts it: `0` and `false` (any case) are
/// false, anything else (`True`, `1`, `t`, even the empty string) true.
#[must_use]
pub fn parse_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// Go's `strconv.ParseBool`: `None` for anything but its twelve spellings
/// (`pretty` is read this way).
#[must_use]
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why Go's `strconv.ParseInt` refused a value; the message is Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIntError {
    /// Not a base-10 integer.
    #[error("strconv.ParseInt: parsing {}: invalid syntax", go_quote(.0))]
    Syntax(String),
    /// Outside `i64`.
    #[error("strconv.ParseInt: parsing {}: value out of range", go_quote(.0))]
    Range(String),
}

/// Go's `strconv.ParseInt(value, 10, 64)`: an optional sign, then ASCII
/// digits only (no spaces, no underscores).
pub fn parse_int64(value: &str) -> Result<i64, ParseIntError> {
    let syntax = || ParseIntError::Syntax(value.to_owned());
    let (negative, digits) = match value.as_bytes().first() {
        Some(b'+') => (false, &value[1..]),
        Some(b'-') => (true, &value[1..]),
        _ => (false, value),
    };
    if digits.is_empty() {
        return Err(syntax());
    }
    // Like Go, an overflow found before a bad character is a range error.
    let mut magnitude: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(syntax());
        }
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| ParseIntError::Range(value.to_owned()))?;
    }
    let range = || ParseIntError::Range(value.to_owned());
    if negative {
        0i64.checked_sub_unsigned(magnitude).ok_or_else(range)
    } else {
        i64::try_from(magnitude).map_err(|_| range())
    }
}

/// Go's `strconv.Quote` for the strings a query carries: double quotes,
/// Go's escapes for quotes, backslashes and control characters.
#[must_use]
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
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
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_false_only_for_0_and_false() {
        for v in ["1", "t", "T", "TRUE", "true", "True", "yes", "maybe", ""] {
            assert!(parse_bool(v), "{v:?}");
        }
        for v in ["0", "false", "False", "FALSE", "fAlSe"] {
            assert!(!parse_bool(v), "{v:?}");
        }
        // Go's ParseBool spellings of false other than these are true here,
        // as upstream's conversion has it.
        assert!(parse_bool("f"));
        assert!(parse_bool("F"));
    }

    #[test]
    fn go_parse_bool_spellings() {
        for v in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(v), Some(true), "{v:?}");
        }
        for v in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(v), Some(false), "{v:?}");
        }
        for v in ["", "tRUE", "yes", "2", " true"] {
            assert_eq!(parse_go_bool(v), None, "{v:?}");
        }
    }

    #[test]
    fn integers_like_go_parse_int() {
        let ok = [
            ("0", 0),
            ("42", 42),
            ("+42", 42),
            ("-42", -42),
            ("007", 7),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (v, want) in ok {
            assert_eq!(parse_int64(v), Ok(want), "{v:?}");
        }
        let syntax = [
            "", "+", "-", " 1", "1 ", "1_000", "0x10", "1.5", "abc", "--1",
        ];
        for v in syntax {
            assert_eq!(
                parse_int64(v),
                Err(ParseIntError::Syntax(v.to_owned())),
                "{v:?}"
            );
        }
        for v in [
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            // Go reports the overflow it meets before the bad character.
            "99999999999999999999x",
        ] {
            assert_eq!(
                parse_int64(v),
                Err(ParseIntError::Range(v.to_owned())),
                "{v:?}"
            );
        }
    }

    #[test]
    fn integer_errors_read_like_go() {
        assert_eq!(
            parse_int64("abc").map_err(|e| e.to_string()),
            Err(r#"strconv.ParseInt: parsing "abc": invalid syntax"#.to_owned())
        );
        assert_eq!(
            parse_int64("99999999999999999999").map_err(|e| e.to_string()),
            Err(
                r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#
                    .to_owned()
            )
        );
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    }

    #[test]
    fn params_read_the_first_value() {
        let params = Params::new(vec![
            ("watch".into(), "True".into()),
            ("watch".into(), "false".into()),
            ("limit".into(), "5".into()),
            ("timeoutSeconds".into(), "soon".into()),
            ("dryRun".into(), "All".into()),
        ]);
        assert!(params.flag("watch"));
        assert!(!params.flag("allowWatchBookmarks"));
        assert_eq!(params.optional_flag("sendInitialEvents"), None);
        assert_eq!(params.int64("limit").ok(), Some(Some(5)));
        assert_eq!(params.int64("gracePeriodSeconds").ok(), Some(None));
        let err = params.int64("timeoutSeconds").err().map(|e| e.to_status());
        assert_eq!(
            err.as_ref()
                .map(|s| (s["code"].clone(), s["reason"].clone(), s["message"].clone())),
            Some((
                400.into(),
                "BadRequest".into(),
                r#"strconv.ParseInt: parsing "soon": invalid syntax"#.into()
            ))
        );
        assert!(params.dry_run());
    }
}
