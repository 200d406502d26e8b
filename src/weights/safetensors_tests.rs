//! Tests of the safetensors reader and writer (kept beside it, in their own file).

use super::*;

fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn error(bytes: &[u8]) -> FormatError {
    match parse(bytes) {
        Ok(_) => panic!("parsed"),
        Err(e) => e,
    }
}

#[test]
fn round_trips_and_pads_to_eight() {
    let mut w = Weights::new();
    w.insert(
        "b",
        ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, -0.0, f32::NAN]).unwrap(),
    );
    w.insert("a/x\"y", ArrayD::from_elem(IxDyn(&[2, 0]), 0.0));
    w.insert("s", ArrayD::from_elem(IxDyn(&[]), 7.5));
    w.metadata.insert("kiln.seed".into(), "3".into());
    let bytes = to_bytes(&w).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!((8 + n) % 8, 0);
    let back = parse(&bytes).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), ["b", "a/x\"y", "s"]);
    assert_eq!(back.metadata, w.metadata);
    for (k, a) in w.iter() {
        let b = back.get(k).unwrap();
        assert_eq!(a.shape(), b.shape());
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}

#[test]
fn reads_files_written_by_others() {
    // As the reference writer lays it out: keys in any order, offsets decide.
    let h = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   "#;
    let mut data = Vec::new();
    for x in [1.0f32, 2.0, 3.0] {
        data.extend_from_slice(&x.to_le_bytes());
    }
    let w = parse(&file(h, &data)).unwrap();
    assert_eq!(w.get("v").unwrap().as_slice().unwrap(), &[1.0]);
    assert_eq!(w.get("w").unwrap().as_slice().unwrap(), &[2.0, 3.0]);
    assert_eq!(w.metadata["format"], "pt");
}

#[test]
fn rejects_lying_headers() {
    let f32x = |n: usize| vec![0u8; 4 * n];
    let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (vec![], None, "empty"),
        (vec![1, 2, 3], None, "too short"),
        (u64::MAX.to_le_bytes().to_vec(), None, "claims"),
        (
            file("{}", &[]).into_iter().take(9).collect(),
            None,
            "claims",
        ),
        (file("not json", &[]), None, "not a JSON object"),
        (file("{\"a\": 1", &[]), None, "not valid JSON"),
        (file("[1, 2]", &[]), None, "not a JSON object"),
        (
            {
                let mut v = 4u64.to_le_bytes().to_vec();
                v.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
                v
            },
            None,
            "not UTF-8",
        ),
        (
            file(
                r#"{"k":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Some("k"),
            "F16",
        ),
        (
            file(
                r#"{"k":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Some("k"),
            "I32",
        ),
        (
            file(
                r#"{"k":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Some("k"),
            "unknown dtype",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &f32x(2),
            ),
            Some("k"),
            "cover 8 bytes",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &f32x(2),
            ),
            Some("k"),
            "past the end",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                &f32x(4),
            ),
            Some("k"),
            "overflows",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                &f32x(1),
            ),
            Some("k"),
            "non-negative",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
                &f32x(3),
            ),
            Some("k"),
            "end before",
        ),
        (
            file(
                r#"{"k":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
                &f32x(1),
            ),
            Some("k"),
            "data_offsets",
        ),
        (
            file(r#"{"k":{"dtype":"F32","data_offsets":[0,4]}}"#, &f32x(1)),
            Some("k"),
            "no shape",
        ),
        (file(r#"{"k":[1]}"#, &[]), Some("k"), "not an object"),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &f32x(3),
            ),
            Some("b"),
            "overlaps `a`",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &f32x(2),
            ),
            Some("a"),
            "gaps",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &f32x(2),
            ),
            None,
            "unclaimed",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &f32x(2),
            ),
            Some("a"),
            "twice",
        ),
        (
            file(r#"{"__metadata__":{"x":1}}"#, &[]),
            None,
            "not a string",
        ),
    ];
    for (bytes, key, words) in cases {
        let e = error(&bytes);
        assert_eq!(e.key.as_deref(), key, "{e:?}");
        assert!(e.message.contains(words), "{:?} lacks {words:?}", e.message);
        if let Some(k) = key {
            assert!(e.message.contains(&format!("`{k}`")), "{:?}", e.message);
        }
    }
}

#[test]
fn every_prefix_of_a_good_file_is_an_error_not_a_panic() {
    let mut w = Weights::new();
    w.insert("x", ArrayD::from_elem(IxDyn(&[2, 3]), 1.5));
    w.insert("y", ArrayD::from_elem(IxDyn(&[4]), -1.0));
    let bytes = to_bytes(&w).unwrap();
    for cut in 0..bytes.len() {
        assert!(parse(&bytes[..cut]).is_err(), "prefix {cut}");
    }
    // Any single corrupted byte either still parses or is an error; never a panic.
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let _ = parse(&b);
        }
    }
}

#[test]
fn refuses_to_write_the_reserved_key() {
    let mut w = Weights::new();
    w.insert(METADATA_KEY, ArrayD::from_elem(IxDyn(&[1]), 0.0));
    let e = to_bytes(&w).unwrap_err();
    assert_eq!(e.key.as_deref(), Some(METADATA_KEY));
}

fn sample() -> Weights {
    let mut w = Weights::new();
    w.insert(
        "z/kernel",
        ArrayD::from_shape_fn(IxDyn(&[3, 2]), |i| i[0] as f32 - 0.5 * i[1] as f32),
    );
    w.insert("a/bias", ArrayD::from_elem(IxDyn(&[2]), -0.25));
    w.insert("m", ArrayD::from_elem(IxDyn(&[0, 4]), 0.0));
    for k in 0..8 {
        w.metadata.insert(format!("key{k}"), format!("value {k}"));
    }
    w
}

#[test]
fn the_crate_reads_what_kiln_writes() {
    let w = sample();
    let bytes = to_bytes(&w).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 3);
    for (k, a) in w.iter() {
        let v = st.tensor(k).unwrap();
        assert_eq!(v.dtype(), Dtype::F32);
        assert_eq!(v.shape(), a.shape());
        let want: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(v.data(), &want[..], "{k}");
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap().len(), 8);
    // The data keeps the weights' order, so they load back in it.
    assert_eq!(meta.offset_keys(), ["z/kernel", "a/bias", "m"]);
}

#[test]
fn kiln_reads_what_the_crate_writes() {
    let w = sample();
    let raw: Vec<(String, Vec<u8>, Vec<usize>)> = w
        .iter()
        .map(|(k, a)| {
            let b = a.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.to_string(), b, a.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, ::safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(k, b, s)| {
            let v = ::safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b);
            (k.clone(), v.unwrap())
        })
        .collect();
    let meta: HashMap<String, String> = w.metadata.clone().into_iter().collect();
    let bytes = ::safetensors::serialize(views.iter().map(|(k, v)| (k, v)), Some(meta));
    let back = parse(&bytes.unwrap()).unwrap();
    // The crate lays tensors out by name; the values and metadata are the same.
    assert_eq!(back.keys().collect::<Vec<_>>(), ["a/bias", "m", "z/kernel"]);
    assert_eq!(back.metadata, w.metadata);
    for (k, a) in w.iter() {
        assert_eq!(back.get(k), Some(a), "{k}");
    }
}

#[test]
fn the_same_weights_give_the_same_bytes() {
    let w = sample();
    let first = to_bytes(&w).unwrap();
    for _ in 0..8 {
        // A fresh copy, so that any hash map inside gets fresh random keys.
        let again = w.clone();
        assert_eq!(to_bytes(&again).unwrap(), first);
    }
}

#[test]
fn regular_files_are_mapped_and_empty_ones_read() {
    let dir = std::env::temp_dir().join(format!("kiln-st-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let w = sample();
    std::fs::write(&path, to_bytes(&w).unwrap()).unwrap();
    let bytes = read_file(&path).unwrap();
    assert!(matches!(bytes, FileBytes::Mapped(_)));
    assert!(parse(&bytes).unwrap().bit_identical(&w));
    std::fs::write(&path, b"").unwrap();
    let bytes = read_file(&path).unwrap();
    assert!(matches!(bytes, FileBytes::Read(ref v) if v.is_empty()));
    assert!(parse(&bytes).unwrap_err().message.contains("empty"));
    std::fs::remove_dir_all(&dir).unwrap();
}
