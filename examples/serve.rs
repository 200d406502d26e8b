//! One compiled model shared by many threads answering requests: each thread predicts
//! on single examples and times every request; at the end, a latency histogram (in
//! µs) with p50 and p99, and a check that every thread got the same bits for the same
//! input as a single-threaded predict. Run with `cargo run --release --example serve`.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use kiln::ndarray::{ArrayD, Axis};
use kiln::{Model, Options};

const THREADS: usize = 8;
const REQUESTS_PER_THREAD: usize = 250;
/// The histogram's bucket bounds, in µs (a last bucket takes the rest).
const BUCKETS_US: [u64; 10] = [2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::from_path(root.join("specs/digits_mlp.yaml"))?;
    let net = model.compile(&Options::default())?;
    let data = net.load_data(root.join("data/digits.npz"))?;
    let images = &data.inputs.first().ok_or("the data has no input")?.1;
    let requests: Vec<ArrayD<f32>> = images
        .axis_iter(Axis(0))
        .take(64)
        .map(|x| x.insert_axis(Axis(0)).to_owned())
        .collect();

    // The answers of a single thread, to compare against.
    let expected = requests
        .iter()
        .map(|x| net.predict(&[("image", x.view())]).map(|y| bits(&y)))
        .collect::<Result<Vec<_>, _>>()?;

    let start = Instant::now();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (net, requests) = (&net, &requests);
                s.spawn(
                    move || -> Result<Vec<(usize, u64, Vec<u32>)>, kiln::Error> {
                        let mut out = Vec::with_capacity(REQUESTS_PER_THREAD);
                        for r in 0..REQUESTS_PER_THREAD {
                            let i = (t * 7 + r * 13) % requests.len();
                            let began = Instant::now();
                            let y = net.predict(&[("image", requests[i].view())])?;
                            let us = began.elapsed().as_micros() as u64;
                            out.push((i, us, bits(&y)));
                        }
                        Ok(out)
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a serving thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let wall = start.elapsed();

    let mut latencies = Vec::new();
    for thread in results {
        for (i, us, got) in thread? {
            assert_eq!(
                got, expected[i],
                "request {i}: a thread's answer differs from the single-threaded one"
            );
            latencies.push(us);
        }
    }
    latencies.sort_unstable();
    print_histogram(&latencies);
    println!(
        "{} requests on {THREADS} threads in {:.1} ms; p50 {} µs, p99 {} µs; all answers bit-identical to one thread's",
        latencies.len(),
        wall.as_secs_f64() * 1e3,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

/// An array's values as bits, to compare answers exactly.
fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// The value at fraction `q` of sorted latencies (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_histogram(sorted: &[u64]) {
    println!("latency histogram (µs):");
    let mut lo = 0;
    for (k, &hi) in BUCKETS_US.iter().enumerate() {
        let n = sorted.iter().filter(|&&us| us >= lo && us < hi).count();
        let label = if k == 0 {
            format!("< {hi}")
        } else {
            format!("{lo}–{hi}")
        };
        print_bucket(&label, n, sorted.len());
        lo = hi;
    }
    let n = sorted.iter().filter(|&&us| us >= lo).count();
    print_bucket(&format!(">= {lo}"), n, sorted.len());
}

fn print_bucket(label: &str, n: usize, total: usize) {
    let line = format!("  {label:>10}: {n:>5} {}", bar(n, total));
    println!("{}", line.trim_end());
}

/// A bar of up to 40 characters, proportional to `n` out of `total`.
fn bar(n: usize, total: usize) -> String {
    "#".repeat((n * 40).div_ceil(total.max(1)))
}
