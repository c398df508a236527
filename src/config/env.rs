//! `${VAR}` and `${VAR:-default}` expansion of config string values. `$$` is a
//! literal `$`. Values are expanded after parsing, so an environment value can
//! never change the structure of the file.

use std::collections::HashMap;

pub type Env = HashMap<String, String>;

/// The process environment (non-UTF-8 entries skipped).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Expand `${VAR}`, `${VAR:-default}` and `$$`; an unset `${VAR}` without default
/// is an error naming the variable, so a forgotten variable never becomes "".
pub fn expand(s: &str, env: &Env) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated '${{' in '{s}'"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("'${{{expr}}}' is not a variable reference (use ${{NAME}} or ${{NAME:-default}})"));
            }
            match (env.get(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (set it, or write ${{{name}:-default}})"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands() {
        let env: Env = [("A".to_string(), "x=y".to_string())].into_iter().collect();
        assert_eq!(expand("${A}", &env).unwrap(), "x=y");
        assert_eq!(expand("p${B:-dflt}q", &env).unwrap(), "pdfltq");
        assert_eq!(expand("$$A $HOME", &env).unwrap(), "$A $HOME");
        assert!(expand("${B}", &env).unwrap_err().contains("B is not set"));
        assert!(expand("${A", &env).is_err());
    }
}
