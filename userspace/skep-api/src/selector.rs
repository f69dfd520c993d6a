//! Label selectors (string syntax and `metav1.LabelSelector`) and field
//! selectors (labels and values from each kind's [`crate::kinds::Strategy`]), parsed and matched like `k8s.io/apimachinery/pkg/labels`
//! and `pkg/fields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::object::{get, str_or_empty};
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// One requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key in (a,b)`, `key=a`, `key==a`.
    In,
    /// `key notin (a,b)`, `key!=a` (also matches objects without the key).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n` (integer comparison).
    Gt,
    /// `key<n`.
    Lt,
}

/// One `key op values` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Operator,
    /// Values (empty for Exists/DoesNotExist).
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Whether labels satisfy this requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        match self.op {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values
                        .iter()
                        .next()
                        .and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A label selector: all requirements must hold (empty matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, ANDed.
    pub requirements: Vec<Requirement>,
    /// A `metav1.LabelSelector` that is null matches nothing.
    pub match_nothing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::DoubleEq);
                } else {
                    tokens.push(Token::Eq);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEq);
                } else {
                    tokens.push(Token::Bang);
                }
            }
            '>' | '<' | ',' | '(' | ')' => {
                chars.next();
                tokens.push(match c {
                    '>' => Token::Gt,
                    '<' => Token::Lt,
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    _ => Token::Close,
                });
            }
            _ => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "=!><,()".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                tokens.push(Token::Ident(ident));
            }
        }
    }
    tokens
}

fn parse_error(msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {msg}"))
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let errs = crate::validation::names::qualified_name(key);
    match errs.first() {
        None => Ok(()),
        Some(e) => Err(parse_error(format!("<nil>: Invalid value: {key:?}: {e}"))),
    }
}

fn check_value(v: &str) -> Result<(), ApiError> {
    let errs = crate::validation::names::label_value(v);
    match errs.first() {
        None => Ok(()),
        Some(e) => Err(parse_error(format!(
            "values[0][{v}]: Invalid value: {v:?}: {e}"
        ))),
    }
}

impl LabelSelector {
    /// Parse the `labelSelector` query syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    #[expect(
        clippy::too_many_lines,
        reason = "a single-pass recursive-descent parser over the token list"
    )]
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let tokens = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        let ident = |i: usize| match tokens.get(i) {
            Some(Token::Ident(s)) => Some(s.clone()),
            _ => None,
        };
        while i < tokens.len() {
            let (key, negated) = if tokens[i] == Token::Bang {
                i += 1;
                (ident(i), true)
            } else {
                (ident(i), false)
            };
            let Some(key) = key else {
                return Err(parse_error(format!(
                    "found '{}', expected: !, identifier, or 'end of string'",
                    token_text(tokens.get(i))
                )));
            };
            check_key(&key)?;
            i += 1;
            let req = if negated {
                Requirement {
                    key,
                    op: Operator::DoesNotExist,
                    values: BTreeSet::new(),
                }
            } else {
                match tokens.get(i) {
                    None | Some(Token::Comma) => Requirement {
                        key,
                        op: Operator::Exists,
                        values: BTreeSet::new(),
                    },
                    Some(Token::Eq | Token::DoubleEq | Token::NotEq | Token::Gt | Token::Lt) => {
                        let op = match tokens[i] {
                            Token::NotEq => Operator::NotIn,
                            Token::Gt => Operator::Gt,
                            Token::Lt => Operator::Lt,
                            _ => Operator::In,
                        };
                        i += 1;
                        let value = match tokens.get(i) {
                            Some(Token::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            None | Some(Token::Comma) => String::new(),
                            Some(t) => {
                                return Err(parse_error(format!(
                                    "found '{}', expected: identifier",
                                    token_text(Some(t))
                                )));
                            }
                        };
                        if matches!(op, Operator::Gt | Operator::Lt)
                            && value.parse::<i64>().is_err()
                        {
                            return Err(parse_error(format!(
                                "for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                            )));
                        }
                        check_value(&value)?;
                        Requirement {
                            key,
                            op,
                            values: BTreeSet::from([value]),
                        }
                    }
                    Some(Token::Ident(word)) if word == "in" || word == "notin" => {
                        let op = if word == "in" {
                            Operator::In
                        } else {
                            Operator::NotIn
                        };
                        i += 1;
                        if tokens.get(i) != Some(&Token::Open) {
                            return Err(parse_error(format!(
                                "found '{}', expected: '('",
                                token_text(tokens.get(i))
                            )));
                        }
                        i += 1;
                        let mut values = BTreeSet::new();
                        loop {
                            match tokens.get(i) {
                                Some(Token::Ident(v)) => {
                                    check_value(v)?;
                                    values.insert(v.clone());
                                    i += 1;
                                }
                                Some(Token::Comma | Token::Close) => {
                                    values.insert(String::new());
                                }
                                t => {
                                    return Err(parse_error(format!(
                                        "found '{}', expected: ',', ')' or identifier",
                                        token_text(t)
                                    )));
                                }
                            }
                            match tokens.get(i) {
                                Some(Token::Comma) => i += 1,
                                Some(Token::Close) => {
                                    i += 1;
                                    break;
                                }
                                t => {
                                    return Err(parse_error(format!(
                                        "found '{}', expected: ',' or ')'",
                                        token_text(t)
                                    )));
                                }
                            }
                        }
                        Requirement { key, op, values }
                    }
                    Some(t) => {
                        return Err(parse_error(format!(
                            "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                            token_text(Some(t))
                        )));
                    }
                }
            };
            reqs.push(req);
            match tokens.get(i) {
                None => break,
                Some(Token::Comma) => {
                    i += 1;
                    if i == tokens.len() {
                        return Err(parse_error("found '', expected: identifier after ','"));
                    }
                }
                t => {
                    return Err(parse_error(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        token_text(t)
                    )));
                }
            }
        }
        Ok(Self {
            requirements: reqs,
            match_nothing: false,
        })
    }

    /// Convert a `metav1.LabelSelector` JSON value; `null` matches nothing, `{}` everything.
    pub fn from_value(v: &Value) -> Result<Self, ApiError> {
        if v.is_null() {
            return Ok(Self {
                requirements: Vec::new(),
                match_nothing: true,
            });
        }
        let mut requirements = Vec::new();
        if let Some(Value::Object(labels)) = v.get("matchLabels") {
            for (k, val) in labels {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Operator::In,
                    values: BTreeSet::from([val.as_str().unwrap_or("").to_owned()]),
                });
            }
        }
        for expr in crate::object::array(v, &["matchExpressions"]) {
            let op = match str_or_empty(expr, &["operator"]) {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            let values = crate::object::array(expr, &["values"])
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect();
            requirements.push(Requirement {
                key: str_or_empty(expr, &["key"]).to_owned(),
                op,
                values,
            });
        }
        Ok(Self {
            requirements,
            match_nothing: false,
        })
    }

    /// Whether a label map satisfies the selector.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.match_nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a labels JSON value (object or null) satisfies the selector.
    pub fn matches_value(&self, labels: &Value) -> bool {
        let empty = Map::new();
        self.matches(labels.as_object().unwrap_or(&empty))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches_value(get(obj, &["metadata", "labels"]).unwrap_or(&Value::Null))
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.match_nothing
    }
}

fn token_text(t: Option<&Token>) -> String {
    match t {
        None => String::new(),
        Some(Token::Ident(s)) => s.clone(),
        Some(Token::Eq) => "=".into(),
        Some(Token::DoubleEq) => "==".into(),
        Some(Token::NotEq) => "!=".into(),
        Some(Token::Bang) => "!".into(),
        Some(Token::Gt) => ">".into(),
        Some(Token::Lt) => "<".into(),
        Some(Token::Comma) => ",".into(),
        Some(Token::Open) => "(".into(),
        Some(Token::Close) => ")".into(),
    }
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field label, e.g. `spec.nodeName`.
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    /// Value to compare with.
    pub value: String,
}

/// A field selector: all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms, ANDed.
    pub requirements: Vec<FieldRequirement>,
}

/// The string value at a dotted field path on an object, `default` when unset.
pub fn field_string(obj: &Value, field: &str, default: &str) -> String {
    let path: Vec<&str> = field.split('.').collect();
    match get(obj, &path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_owned(),
    }
}

/// The comma-separated terms of a field selector (`fields.splitTerms`):
/// a backslash-escaped comma is data, and the backslash stays for
/// [`unescape_field_value`].
fn split_field_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// A term's field, whether it is negated, and its raw value
/// (`fields.splitTerm`): the leftmost operator splits it, `!=` and `==`
/// before `=` at the same place; the field has no escaping.
fn split_field_term(term: &str) -> Option<(&str, bool, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        if let Some(value) = rest.strip_prefix("!=") {
            Some((&term[..i], true, value))
        } else if let Some(value) = rest.strip_prefix("==") {
            Some((&term[..i], false, value))
        } else {
            rest.strip_prefix('=')
                .map(|value| (&term[..i], false, value))
        }
    })
}

/// A field selector value with `\\`, `\,` and `\=` unescaped
/// (`fields.UnescapeValue`); an unknown escape, a trailing backslash, or a
/// bare `=` is an error with upstream's message (which prints the rune as
/// a number, as Go's `%v` does).
fn unescape_field_value(value: &str) -> Result<String, ApiError> {
    let mut out = String::with_capacity(value.len());
    let mut in_slash = false;
    for c in value.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            return Err(ApiError::bad_request(format!(
                "invalid field selector: unescaped character in value: {}",
                u32::from(c)
            )));
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err(ApiError::bad_request(
            "invalid field selector: invalid escape sequence: \\",
        ));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parse `a=b,c==d,e!=f` as `fields.ParseSelector` does (empty terms,
    /// as in `a=b,`, are skipped; values unescaped), then check every field
    /// is supported for `info`'s kind.
    pub fn parse(info: &ResourceInfo, s: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        // Upstream sorts the terms: it decides which bad term is reported.
        let mut terms = split_field_terms(s);
        terms.sort_unstable();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, negated, value)) = split_field_term(term) else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let value = unescape_field_value(value)?;
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                negated,
                value,
            });
        }
        // Upstream checks the fields after parsing the whole selector.
        for r in &requirements {
            let field = r.field.as_str();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !info.strategy().field_labels().contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
        }
        Ok(Self { requirements })
    }

    /// Whether an object of `info`'s kind satisfies the selector.
    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        let strategy = info.strategy();
        self.requirements
            .iter()
            .all(|r| (strategy.field_value(obj, &r.field) == r.value) != r.negated)
    }

    /// The value the selector pins `field` to with `=`, if any (e.g. `metadata.name` for watches).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
#[path = "selector_test.rs"]
mod tests;
