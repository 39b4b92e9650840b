//! Sizes that both ends enforce. A request outside them is refused with
//! [`ErrorCode::InvalidRequest`](crate::ErrorCode::InvalidRequest) or
//! [`ErrorCode::TooLarge`](crate::ErrorCode::TooLarge) before it touches the store.

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest owner id, in bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// Longest attribute name, in bytes.
pub const MAX_ATTR_NAME_LEN: usize = 256;
/// Default bound on the encoded size of one session's attributes.
pub const DEFAULT_MAX_ATTRS_BYTES: usize = 64 * 1024;
/// Largest page a `ListByOwner` returns, whatever the request asks for.
pub const MAX_LIST_PAGE: u32 = 1000;
/// Largest client name accepted in a `Hello`.
pub const MAX_CLIENT_NAME_LEN: usize = 128;

/// Checks a namespace name: 1 to [`MAX_NAMESPACE_LEN`] bytes of ASCII letters,
/// digits, `_`, `-`, `.` or `:`.
///
/// # Errors
/// A message naming what is wrong (never echoing more than the length).
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Err("namespace is empty".into());
    }
    if ns.len() > MAX_NAMESPACE_LEN {
        return Err(format!(
            "namespace is {} bytes, the limit is {MAX_NAMESPACE_LEN}",
            ns.len()
        ));
    }
    if !ns.bytes().all(|b| NAMESPACE_BYTES[usize::from(b)]) {
        return Err("namespace may only hold ASCII letters, digits and _ - . :".into());
    }
    Ok(())
}

/// The bytes a namespace may hold: ASCII letters, digits and `_ - . :` (a
/// table: one load a byte, on every request that names a namespace).
static NAMESPACE_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':');
        b += 1;
    }
    t
};

/// Checks an owner id: 1 to [`MAX_OWNER_LEN`] bytes, no control characters.
///
/// # Errors
/// A message naming what is wrong.
pub fn check_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() {
        return Err("owner is empty".into());
    }
    if owner.len() > MAX_OWNER_LEN {
        return Err(format!(
            "owner is {} bytes, the limit is {MAX_OWNER_LEN}",
            owner.len()
        ));
    }
    // ASCII first (control: below 0x20, and DEL); the C1 controls
    // (U+0080..U+009F) only in a string that is not all ASCII.
    let control = owner.bytes().any(|b| b < 0x20 || b == 0x7f)
        || (!owner.is_ascii() && owner.chars().any(char::is_control));
    if control {
        return Err("owner contains control characters".into());
    }
    Ok(())
}

/// Checks an attribute name: 1 to [`MAX_ATTR_NAME_LEN`] bytes.
///
/// # Errors
/// A message naming what is wrong.
pub fn check_attr_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("attribute name is empty".into());
    }
    if name.len() > MAX_ATTR_NAME_LEN {
        return Err(format!(
            "attribute name is {} bytes, the limit is {MAX_ATTR_NAME_LEN}",
            name.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(check_namespace("app").is_ok());
        assert!(check_namespace("tenant-1.users:v2").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace("a b").is_err());
        assert!(check_namespace(&"x".repeat(MAX_NAMESPACE_LEN + 1)).is_err());
    }

    #[test]
    fn owners_and_attrs() {
        assert!(check_owner("alice@example.com").is_ok());
        assert!(check_owner("bad\nowner").is_err());
        assert!(check_owner("").is_err());
        assert!(check_attr_name("cart").is_ok());
        assert!(check_attr_name("").is_err());
        assert!(check_owner("del\u{7f}").is_err());
        assert!(check_owner("c1\u{85}").is_err());
        assert!(check_owner("caf\u{e9}").is_ok());
    }

    #[test]
    fn the_namespace_table_is_the_rule() {
        for b in 0..=255u8 {
            let rule = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
            assert_eq!(NAMESPACE_BYTES[usize::from(b)], rule, "{b}");
        }
    }

    proptest::proptest! {
        /// The owner check's ASCII fast path says what `char::is_control`
        /// says, for any string.
        #[test]
        fn the_owner_check_is_is_control(s in "\\PC{0,8}|[\\x00-\\x{a0}]{0,8}") {
            let rule = !s.is_empty() && s.len() <= MAX_OWNER_LEN && !s.chars().any(char::is_control);
            proptest::prop_assert_eq!(check_owner(&s).is_ok(), rule);
        }
    }
}
