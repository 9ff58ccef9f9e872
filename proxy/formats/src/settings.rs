//! The config file's contents (`--config FILE`): keys and values in TOML or YAML. Which keys
//! exist, and what each value means, is the command line's business: the proxy turns these into
//! flags, so clap checks them exactly as it checks flags.

use std::path::Path;

/// The file's syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Yaml,
}

impl Syntax {
    /// YAML for `.yaml` and `.yml`, else TOML.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Syntax::Yaml,
            _ => Syntax::Toml,
        }
    }
}

/// A value as read from the file: a scalar (numbers as written), a boolean or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    One(String),
    Bool(bool),
    Many(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    #[error("a key that is not a string")]
    KeyNotString,
    #[error("`{key}`: a list of strings or numbers")]
    NestedList { key: String },
    #[error("`{key}`: a string, number, boolean or list")]
    NotAValue { key: String },
}

/// The file's top-level keys and their values, in the file's order for YAML (TOML's table is
/// sorted by key).
pub fn parse(text: &str, syntax: Syntax) -> Result<Vec<(String, Setting)>, SettingsError> {
    match syntax {
        Syntax::Yaml => {
            let map: serde_yaml::Mapping = serde_yaml::from_str(text)?;
            map.into_iter()
                .map(|(k, v)| {
                    let key = k.as_str().ok_or(SettingsError::KeyNotString)?.to_owned();
                    let value = yaml_value(&key, v)?;
                    Ok((key, value))
                })
                .collect()
        }
        Syntax::Toml => {
            let table: toml::Table = text.parse()?;
            table
                .into_iter()
                .map(|(k, v)| {
                    let value = toml_value(&k, v)?;
                    Ok((k, value))
                })
                .collect()
        }
    }
}

fn toml_value(key: &str, v: toml::Value) -> Result<Setting, SettingsError> {
    Ok(match v {
        toml::Value::String(s) => Setting::One(s),
        toml::Value::Integer(i) => Setting::One(i.to_string()),
        toml::Value::Float(f) => Setting::One(f.to_string()),
        toml::Value::Boolean(b) => Setting::Bool(b),
        toml::Value::Array(items) => Setting::Many(
            items
                .into_iter()
                .map(|i| scalar(key, toml_value(key, i)?))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(SettingsError::NotAValue { key: key.into() }),
    })
}

fn yaml_value(key: &str, v: serde_yaml::Value) -> Result<Setting, SettingsError> {
    Ok(match v {
        serde_yaml::Value::String(s) => Setting::One(s),
        serde_yaml::Value::Number(n) => Setting::One(n.to_string()),
        serde_yaml::Value::Bool(b) => Setting::Bool(b),
        serde_yaml::Value::Sequence(items) => Setting::Many(
            items
                .into_iter()
                .map(|i| scalar(key, yaml_value(key, i)?))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(SettingsError::NotAValue { key: key.into() }),
    })
}

/// A list's item: a string or number only.
fn scalar(key: &str, item: Setting) -> Result<String, SettingsError> {
    match item {
        Setting::One(s) => Ok(s),
        _ => Err(SettingsError::NestedList { key: key.into() }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn toml_and_yaml_give_the_same_settings() {
        let want = vec![
            ("a".to_owned(), Setting::One("x".into())),
            ("b".to_owned(), Setting::One("5".into())),
            ("c".to_owned(), Setting::Bool(true)),
            ("d".to_owned(), Setting::Many(vec!["p".into(), "7".into()])),
        ];
        let toml = parse("a = \"x\"\nb = 5\nc = true\nd = [\"p\", 7]\n", Syntax::Toml).unwrap();
        let yaml = parse("a: x\nb: 5\nc: true\nd: [p, 7]\n", Syntax::Yaml).unwrap();
        assert_eq!((toml, yaml), (want.clone(), want));
        assert_eq!(Syntax::of(Path::new("c.yml")), Syntax::Yaml);
        assert_eq!(Syntax::of(Path::new("c.conf")), Syntax::Toml);
    }

    #[test]
    fn what_is_not_a_flag_value_is_refused() {
        let err = |text, syntax| parse(text, syntax).unwrap_err().to_string();
        assert_eq!(
            err("d = [[1]]\n", Syntax::Toml),
            "`d`: a list of strings or numbers"
        );
        assert_eq!(
            err("t = { x = 1 }\n", Syntax::Toml),
            "`t`: a string, number, boolean or list"
        );
        assert_eq!(
            err("t: {x: 1}\n", Syntax::Yaml),
            "`t`: a string, number, boolean or list"
        );
        assert_eq!(err("1: x\n", Syntax::Yaml), "a key that is not a string");
        assert!(parse("a = \n", Syntax::Toml).is_err());
        assert!(parse("- a\n", Syntax::Yaml).is_err());
    }
}
