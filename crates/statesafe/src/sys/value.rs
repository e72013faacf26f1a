//! A document type that is `serde_json::Value` itself, recognized as such: the
//! default `Store` (`Store<Value>`) then takes the tree it keeps as the state, and the
//! state as the new tree, by move, instead of decoding one from the other
//! (`T::deserialize`) and encoding it back (`serde_json::to_value`), which cost more
//! than half of a 1 KiB journal-mode commit's instructions (`docs/benchmarks.md`,
//! "jperf15"). The result is the same tree: the vendored serde_json decodes a `Value`
//! from a `Value` keeping every number's text (`vendor/serde_json/STATESAFE.md`).
//!
//! `T` need not be `'static` (a `Store<T>` does not ask it), so `std::any::TypeId`
//! cannot tell; `typeid::of` can: it is `TypeId::of` of the type with its lifetimes
//! erased. `Value` has no lifetime parameter, so a type whose erased id is `Value`'s
//! is `Value` itself, not merely "`Value` up to lifetimes".

#![allow(unsafe_code)]

use std::mem::ManuallyDrop;

use serde_json::Value;

/// Whether `T` is `serde_json::Value`.
pub(crate) fn is_value<T>() -> bool {
    typeid::of::<T>() == typeid::of::<Value>()
}

/// `state` itself when `T` is `serde_json::Value`; otherwise it is handed back.
pub(crate) fn into_value<T>(state: T) -> Result<Value, T> {
    cast::<T, Value>(state)
}

/// `tree` itself as a `T` when `T` is `serde_json::Value`; otherwise it is handed back.
pub(crate) fn from_value<T>(tree: Value) -> Result<T, Value> {
    cast::<Value, T>(tree)
}

/// `state` as a `&Value` when `T` is `serde_json::Value`.
pub(crate) fn as_value<T>(state: &T) -> Option<&Value> {
    if !is_value::<T>() {
        return None;
    }
    // SAFETY: `T` is `Value` (see `is_value` and the module's comment): the pointer
    // is a `&Value`'s, with the lifetime of the borrow it came from.
    Some(unsafe { &*std::ptr::from_ref(state).cast::<Value>() })
}

/// `from` as a `B` when `A` and `B` are the same type (one of them `Value`, which
/// has no lifetime parameter); otherwise `from` is handed back.
fn cast<A, B>(from: A) -> Result<B, A> {
    if typeid::of::<A>() != typeid::of::<B>() {
        return Err(from);
    }
    let from = ManuallyDrop::new(from);
    // SAFETY: `A` and `B` are the same type (`Value` on one side has no lifetime to
    // erase, so equal erased ids mean equal types): the bytes read are a valid `B`.
    // `from` is never dropped (`ManuallyDrop`), so the value is moved, not copied:
    // exactly one owner remains.
    Ok(unsafe { std::ptr::read(std::ptr::from_ref::<A>(&from).cast::<B>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Other(Value);

    #[test]
    fn only_value_itself_is_taken_as_a_value() {
        let tree = serde_json::json!({"n": 1, "big": 123456789012345678901234567890_u128});
        assert!(is_value::<Value>());
        assert!(!is_value::<Other>());
        assert!(!is_value::<&Value>());
        assert!(!is_value::<Box<Value>>());
        assert!(!is_value::<std::borrow::Cow<'_, str>>());
        assert_eq!(as_value(&tree), Some(&tree));
        assert_eq!(as_value(&Other(tree.clone())), None);
        let moved: Value = from_value::<Value>(tree.clone()).unwrap();
        assert_eq!(moved, tree);
        assert_eq!(into_value(moved).unwrap(), tree);
        assert_eq!(from_value::<Other>(tree.clone()).unwrap_err(), tree);
        assert_eq!(
            into_value(Other(tree.clone())).unwrap_err(),
            Other(tree.clone())
        );
        // A type with a lifetime whose erased id could be confused with nothing else.
        let text = String::from("x");
        let borrowed: std::borrow::Cow<'_, str> = std::borrow::Cow::Borrowed(&text);
        assert!(into_value(borrowed).is_err());
    }
}
