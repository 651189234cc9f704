//! The `config_section!` macro: one declaration gives a section's struct, its serde mapping (YAML
//! key per field, unknown keys rejected, missing keys defaulted), its `Default` and the key table
//! that the YAML generator and the unknown-key check walk.

/// One key of a config section: its YAML name, its doc comment and, for sections and lists of
/// sections, the keys below it.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// YAML key exactly as upstream spells it.
    pub key: &'static str,
    /// The field's doc comment; its first line is the comment written into `woodpecker.yaml`.
    pub doc: &'static str,
    /// Keys of the nested section (or of each list item), `None` for scalar values.
    pub children: fn() -> Option<&'static [KeyDoc]>,
    /// The value's type as the configuration reference names it (`integer`, `string`, `section`, ...).
    pub value_type: fn() -> String,
    /// The accepted spellings of an enumerated value, `None` for any other value.
    pub allowed_values: fn() -> Option<&'static [&'static str]>,
    /// The serde `with` module of the key (`crate::config::units::millis`, ...), `""` when none: it sets
    /// the unit of a plain number.
    pub with: &'static str,
}

impl KeyDoc {
    /// First line of the doc comment, trimmed.
    pub fn summary(&self) -> &'static str {
        self.doc.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
    }
}

/// A config value type that knows the documented keys below it (none for scalars).
pub trait Documented {
    /// The keys of this section, or `None` for a scalar value.
    fn key_docs() -> Option<&'static [KeyDoc]> {
        None
    }

    /// The value's type as the configuration reference names it.
    fn value_type() -> String {
        "section".to_owned()
    }

    /// The accepted spellings of an enumerated value.
    fn allowed_values() -> Option<&'static [&'static str]> {
        None
    }
}

macro_rules! scalar_documented {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Documented for $ty {
            fn value_type() -> String {
                $name.to_owned()
            }
        })*
    };
}

scalar_documented!(
    u16 => "integer",
    u32 => "integer",
    u64 => "integer",
    usize => "integer",
    f64 => "number",
    bool => "boolean",
    String => "string",
    std::time::Duration => "duration",
);

impl<T: Documented> Documented for Vec<T> {
    fn key_docs() -> Option<&'static [KeyDoc]> {
        T::key_docs()
    }

    fn value_type() -> String {
        format!("list of {}", T::value_type())
    }
}

/// Declares a config section. Every field carries a doc comment (first line = YAML comment), its
/// YAML key, an optional serde `with` module and its default:
///
/// ```ignore
/// config_section! {
///     /// Section doc.
///     pub struct Example {
///         /// Field doc.
///         #[key = "maxSize", with = "crate::config::units::bytes"]
///         pub max_size: u64 = 1024,
///     }
/// }
/// ```
macro_rules! config_section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                #[key = $key:literal $(, with = $with:literal)?]
                pub $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $key $(, with = $with)?)]
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $crate::config::schema::Documented for $name {
            fn key_docs() -> Option<&'static [$crate::config::schema::KeyDoc]> {
                const DOCS: &[$crate::config::schema::KeyDoc] = &[$(
                    $crate::config::schema::KeyDoc {
                        key: $key,
                        doc: concat!($($doc, "\n"),+),
                        children: <$ty as $crate::config::schema::Documented>::key_docs,
                        value_type: <$ty as $crate::config::schema::Documented>::value_type,
                        allowed_values: <$ty as $crate::config::schema::Documented>::allowed_values,
                        with: concat!("" $(, $with)?),
                    },
                )*];
                Some(DOCS)
            }
        }
    };
}

/// Declares a string-valued config enum: serde names, `Display`, the allowed names, and no keys.
macro_rules! config_enum {
    (
        $(#[doc = $edoc:literal])*
        pub enum $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $variant:ident = $text:literal,
            )+
        }
    ) => {
        $(#[doc = $edoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every accepted YAML spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The YAML spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::config::schema::Documented for $name {
            fn value_type() -> String {
                "string".to_owned()
            }

            fn allowed_values() -> Option<&'static [&'static str]> {
                Some(Self::NAMES)
            }
        }
    };
}

pub(crate) use config_enum;
pub(crate) use config_section;
