//! The `.npz` format (numpy's `np.savez` / `np.savez_compressed`): a zip archive of
//! `.npy` files, one per named array. Read with the `zip` crate (stored or deflated
//! members), each member parsed by [`super::npy`]; written uncompressed.

use std::io::{Cursor, Read, Write};

use ndarray::ArrayD;

use super::npy::{self, Loaded};

/// Reads every array of an `.npz` archive, in archive order, named without `.npy`.
/// `limit` bounds the bytes any one member may expand to (a zip bomb is an error).
pub fn parse(bytes: &[u8], limit: u64) -> Result<Vec<(String, Loaded)>, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("it is not a valid .npz (zip) archive: {e}"))?;
    let mut out: Vec<(String, Loaded)> = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| format!("member {i} of the archive cannot be read: {e}"))?;
        let name = member
            .name()
            .map_err(|e| format!("member {i} of the archive has a bad name: {e}"))?
            .to_string();
        if member.is_dir() {
            continue;
        }
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        if member.size() > limit {
            return Err(format!(
                "the array `{key}` claims {} bytes, more than kiln reads ({limit})",
                member.size()
            ));
        }
        let mut buf = Vec::new();
        (&mut member)
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| format!("the array `{key}` cannot be decompressed: {e}"))?;
        if buf.len() as u64 > limit {
            return Err(format!(
                "the array `{key}` expands to more than {limit} bytes"
            ));
        }
        let arr = npy::parse(&buf).map_err(|e| format!("the array `{key}`: {e}"))?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("the archive holds two arrays named `{key}`"));
        }
        out.push((key, arr));
    }
    Ok(out)
}

/// Serializes named f32 arrays as an uncompressed `.npz` archive.
pub fn to_bytes(arrays: &[(String, ArrayD<f32>)]) -> std::io::Result<Vec<u8>> {
    let members: Vec<(String, Vec<u8>)> = arrays
        .iter()
        .map(|(n, a)| (n.clone(), npy::to_bytes(a)))
        .collect();
    pack(&members)
}

/// An uncompressed `.npz` archive of ready-made `.npy` files, by array name.
pub fn pack(members: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, bytes) in members {
        w.start_file(format!("{name}.npy"), opts)
            .map_err(std::io::Error::other)?;
        w.write_all(bytes)?;
    }
    Ok(w.finish().map_err(std::io::Error::other)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 2]), |i| (i[0] + 2 * i[1]) as f32);
        let b = ArrayD::from_elem(IxDyn(&[3]), 0.5f32);
        let bytes = to_bytes(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        let got = parse(&bytes, 1 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "a");
        assert_eq!(got[0].1.data, a);
        assert_eq!(got[1].1.data, b);
        assert!(parse(b"not a zip", 1 << 20).is_err());
        assert!(parse(&bytes, 10).is_err());
        for n in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse(&bytes[..n], 1 << 20).is_err());
        }
        let mut flipped = bytes.clone();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
            let _ = parse(&flipped, 1 << 20);
        }
    }
}
