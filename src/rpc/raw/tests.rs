//! The raw codec against Perl's bytes and its limits.

use super::*;
use serde::{Deserialize, Serialize};

fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: T) {
    let mut bytes = Vec::new();
    to_bytes(&value, &mut bytes).unwrap();
    assert_eq!(from_bytes::<T>(&bytes).unwrap(), value);
}

#[test]
fn bytes_are_one_string() {
    let mut bytes = Vec::new();
    to_bytes(&vec![1u8, 2, 3], &mut bytes).unwrap();
    assert_eq!(bytes, [3, 1, 2, 3]);
    bytes.clear();
    to_bytes(&vec![1u16, 2], &mut bytes).unwrap();
    assert_eq!(bytes, b"\x011\x012");
}

#[test]
fn perl_layout() {
    let mut bytes = Vec::new();
    to_bytes(&("rmdir", "/tmp/x"), &mut bytes).unwrap();
    assert_eq!(bytes, b"\x05rmdir\x06/tmp/x");
    let long = vec![b'a'; 200];
    bytes.clear();
    to_bytes(&(long.clone(),), &mut bytes).unwrap();
    assert_eq!(&bytes[..2], &[0x81, 0x48]); // 200 in BER
    assert_eq!(decode_strings(&bytes).unwrap(), vec![long]);
}

#[test]
fn types_round_trip() {
    round_trip(vec![b"a".to_vec(), vec![], vec![0, 255]]);
    round_trip(("add".to_string(), 1i64, 3u8, true, 'x', 2.5f64));
    round_trip(String::from("one"));
    round_trip(());
    round_trip(vec![0u8, 1, 255]);
    round_trip(Vec::<u8>::new());
    round_trip(vec![7u8]);
    round_trip(vec![300u16, 7]);
    round_trip(vec!["x".to_string()]);
    round_trip((5u8, 6u8));
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Command {
        Rmdir,
        Unlink,
    }
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Request {
        command: Command,
        path: String,
    }
    round_trip(Request {
        command: Command::Unlink,
        path: "/tmp/1".into(),
    });
}

#[test]
fn refuses_what_strings_cannot_carry() {
    let mut bytes = Vec::new();
    let err = to_bytes(&vec![vec!["nested"]], &mut bytes).unwrap_err();
    assert!(err.0.contains("nested list"), "{err}");
    assert!(to_bytes(&Option::<u8>::None, &mut bytes).is_err());
    assert!(from_bytes::<(u8, u8)>(b"\x01x\x011").is_err());
    assert!(
        from_bytes::<String>(b"\x05ab")
            .unwrap_err()
            .0
            .contains("cut short")
    );
    assert!(from_bytes::<String>(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
}
