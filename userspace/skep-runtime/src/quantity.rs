//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1e9`) as numbers.

/// Parses a quantity to its value (e.g. `"64Mi"` → 67108864.0, `"500m"` → 0.5).
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    let v = base * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A CPU quantity in millicores, rounded up (`"250m"` → 250, `"1.5"` → 1500).
pub fn cpu_millis(s: &str) -> Option<u64> {
    to_u64((parse(s)? * 1000.0).ceil())
}

/// A memory quantity in bytes, rounded up.
pub fn bytes(s: &str) -> Option<u64> {
    to_u64(parse(s)?.ceil())
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "checked finite, non-negative and in range first"
)]
fn to_u64(v: f64) -> Option<u64> {
    (0.0..1.8e19).contains(&v).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("1"), Some(1000));
        assert_eq!(cpu_millis("0.25"), Some(250));
        assert_eq!(bytes("64Mi"), Some(64 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("1Qi"), None);
        assert_eq!(bytes("-1"), None);
    }
}
