//! Kubernetes resource quantities (`50m`, `64Mi`, `0.5`, `1e3`), parsed as the API server
//! would accept them, so a bad annotation is refused by the injector with its name instead
//! of by the API server with a message about a container the user never wrote.

/// Which resource a quantity is for: memory refuses sub-byte suffixes (`64m` is 0.064 bytes,
/// always a typo for `64Mi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

/// The quantity's value in base units (cores, bytes), or what is wrong with it.
pub fn parse(text: &str, resource: Resource) -> Result<f64, String> {
    let example = match resource {
        Resource::Cpu => "a CPU quantity such as 100m or 0.5",
        Resource::Memory => "a memory quantity such as 64Mi or 1Gi",
    };
    let invalid = || format!("is not {example}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty()
        || number == "."
        || number.matches('.').count() > 1
        || !number.bytes().any(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let digits = &exponent[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let exponent: i32 = digits.parse().map_err(|_| invalid())?;
            10f64.powi(exponent)
        }
        _ => return Err(invalid()),
    };
    if resource == Resource::Memory && matches!(suffix, "n" | "u" | "m") {
        return Err(format!("is a fraction of a byte; {example} (Mi, not m)"));
    }
    let value = number * multiplier;
    if !value.is_finite() {
        return Err(invalid());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_api_server_accepts() {
        let cases = [
            ("50m", Resource::Cpu, 0.05),
            ("0.5", Resource::Cpu, 0.5),
            ("2", Resource::Cpu, 2.0),
            (".5", Resource::Cpu, 0.5),
            ("1e3", Resource::Cpu, 1000.0),
            ("64Mi", Resource::Memory, 64.0 * 1024.0 * 1024.0),
            ("1G", Resource::Memory, 1e9),
            ("128974848", Resource::Memory, 128974848.0),
            ("129e6", Resource::Memory, 129e6),
        ];
        for (text, resource, expected) in cases {
            let value = parse(text, resource).unwrap();
            assert!((value - expected).abs() < 1e-9, "{text}: {value}");
        }
    }

    #[test]
    fn refuses_the_rest_with_an_example() {
        for text in [
            "", "m", "abc", "1.2.3", "-1", "1 Mi", "1mi", "1KiB", "1e", "1e+", ".",
        ] {
            let error = parse(text, Resource::Cpu).unwrap_err();
            assert!(error.contains("such as 100m"), "{text}: {error}");
        }
        let error = parse("64m", Resource::Memory).unwrap_err();
        assert!(error.contains("Mi, not m"), "{error}");
    }
}
