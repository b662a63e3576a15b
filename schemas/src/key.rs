//! Ed25519 public keys in Nix's `name:base64` format, as used for trusted controller
//! keys and binary cache keys.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Length of an ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// A named ed25519 public key, written `name:base64` (Nix's key format).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey {
    /// The key's name, e.g. `fleet-1` or `cache.example.com-1`; non-empty, no ':'.
    pub name: String,
    /// The raw ed25519 public key.
    pub key: [u8; PUBLIC_KEY_LEN],
}

/// Text that is not a `name:base64` ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid public key `{input}`: {problem}")]
pub struct PublicKeyError {
    /// The rejected text.
    pub input: String,
    /// What was wrong, phrased with what was expected.
    pub problem: String,
}

impl FromStr for PublicKey {
    type Err = PublicKeyError;

    fn from_str(s: &str) -> Result<Self, PublicKeyError> {
        let fail = |problem: String| PublicKeyError { input: s.to_owned(), problem };
        let Some((name, encoded)) = s.split_once(':') else {
            return Err(fail("expected `name:base64`, like `fleet-1:<44 base64 characters>`".into()));
        };
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(fail("expected `name:base64`; the name before ':' must be non-empty, without spaces".into()));
        }
        let bytes = STANDARD.decode(encoded).map_err(|e| fail(base64_problem(encoded, &e)))?;
        let key = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| fail(length_problem(bytes.len())))?;
        Ok(Self { name: name.to_owned(), key })
    }
}

/// Length of a Nix ed25519 secret key in bytes (seed and public key).
const SECRET_KEY_LEN: usize = 64;
/// How a public key is written after the ':'.
const PUBLIC_FORM: &str = "a public key is 32 bytes, written as 44 base64 characters ending in `=`";
/// How to get the public key when a secret one was given.
const SECRET_HINT: &str = "this looks like a Nix secret key (64 bytes, 88 base64 characters), \
    which must stay on the controller; its public key is printed by \
    `nix --extra-experimental-features nix-command key convert-secret-to-public < SECRET_KEY_FILE`";

/// Names the offending character and position instead of the decoder's byte value.
fn base64_problem(encoded: &str, error: &base64::DecodeError) -> String {
    use base64::DecodeError;
    let what = match error {
        DecodeError::InvalidByte(offset, b'=') => {
            format!("`=` at character {} after ':' is padding, which may only end the key", offset + 1)
        }
        DecodeError::InvalidByte(offset, byte) => format!(
            "{:?} at character {} after ':' is not base64 (letters, digits, `+`, `/` and a final `=`)",
            char::from(*byte),
            offset + 1
        ),
        DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => {
            format!("{} characters after ':' are not whole base64 (a multiple of 4, `=`-padded)", encoded.len())
        }
        DecodeError::InvalidLastSymbol(offset, _) => {
            format!("character {} after ':' cannot end base64 text", offset + 1)
        }
    };
    if encoded.len() == 88 && encoded.ends_with("==") {
        return format!("the part after ':' is not valid base64: {what}; {SECRET_HINT}");
    }
    format!("the part after ':' is not valid base64: {what}; {PUBLIC_FORM}")
}

fn length_problem(len: usize) -> String {
    if len == SECRET_KEY_LEN {
        return format!("an ed25519 public key is {PUBLIC_KEY_LEN} bytes, this decodes to {len}: {SECRET_HINT}");
    }
    format!("an ed25519 public key is {PUBLIC_KEY_LEN} bytes, this decodes to {len}; {PUBLIC_FORM}")
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl TryFrom<String> for PublicKey {
    type Error = PublicKeyError;
    fn try_from(s: String) -> Result<Self, PublicKeyError> {
        s.parse()
    }
}

impl From<PublicKey> for String {
    fn from(k: PublicKey) -> String {
        k.to_string()
    }
}

crate::ids::serde_via_str!(PublicKey, "public key");

impl schemars::JsonSchema for PublicKey {
    fn schema_name() -> Cow<'static, str> {
        "PublicKey".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[^:\\s]+:[A-Za-z0-9+/]{43}=$",
            "description": "An ed25519 public key in Nix's `name:base64` format."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=";

    #[test]
    fn parses_and_displays() {
        let key: PublicKey = KEY.parse().unwrap();
        assert_eq!(key.name, "fleet-1");
        assert_eq!(key.to_string(), KEY);
        let cache: PublicKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=".parse().unwrap();
        assert_eq!(cache.name, "cache.nixos.org-1");
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }

    #[test]
    fn rejects_bad_keys() {
        for (input, want) in [
            ("11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=", "expected `name:base64`"),
            (":11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=", "name before ':' must be non-empty"),
            ("fleet 1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=", "without spaces"),
            ("fleet-1:not base64!", "not valid base64"),
            ("fleet-1:<base64 ed25519 public key>", "not valid base64"),
            ("fleet-1:AAAA", "is 32 bytes, this decodes to 3"),
            ("fleet-1:", "is 32 bytes, this decodes to 0"),
        ] {
            let err = input.parse::<PublicKey>().unwrap_err();
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
        let secret_sized = format!("fleet-1:{}", STANDARD.encode([7u8; 64]));
        let err = secret_sized.parse::<PublicKey>().unwrap_err();
        assert!(err.to_string().contains("this decodes to 64"), "{err}");
    }

    #[test]
    fn explains_secret_keys_and_bad_base64_exactly() {
        let hint = "this looks like a Nix secret key (64 bytes, 88 base64 characters), which must stay on \
                    the controller; its public key is printed by \
                    `nix --extra-experimental-features nix-command key convert-secret-to-public < SECRET_KEY_FILE`";
        let form = "a public key is 32 bytes, written as 44 base64 characters ending in `=`";
        let secret = "fleet-1:gNgRQcyOORWnF62sCLtUIoxHv5xXeguYEpSH0Ai3dwxfjgECXDsHw1sCnxKdNqQunX+UH417SB8kiSkwld1g6A==";
        for (input, problem) in [
            (secret.to_owned(), format!("an ed25519 public key is 32 bytes, this decodes to 64: {hint}")),
            (
                secret.replace("UH417", "UH4=7"),
                format!("the part after ':' is not valid base64: `=` at character 71 after ':' is padding, which may only end the key; {hint}"),
            ),
            (
                format!("{KEY}{}", &KEY[8..]),
                format!("the part after ':' is not valid base64: `=` at character 44 after ':' is padding, which may only end the key; {form}"),
            ),
            (
                "fleet-1:not base64!".into(),
                format!("the part after ':' is not valid base64: ' ' at character 4 after ':' is not base64 (letters, digits, `+`, `/` and a final `=`); {form}"),
            ),
            (
                "fleet-1:AAAAA".into(),
                format!("the part after ':' is not valid base64: 5 characters after ':' are not whole base64 (a multiple of 4, `=`-padded); {form}"),
            ),
            ("fleet-1:AAAA".into(), format!("an ed25519 public key is 32 bytes, this decodes to 3; {form}")),
        ] {
            let err = input.parse::<PublicKey>().unwrap_err();
            assert_eq!(err.problem, problem, "{input}");
        }
    }
}
