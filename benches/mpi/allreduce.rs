//! The allreduce's cost on this machine, for SCALING.md: `mpirun -n K` this program
//! (`cargo build --release --features mpi --example allreduce`); rank 0 prints, per
//! buffer size, the median time of `kiln::dist::Comm::allreduce_f32` over the
//! processes, and the latency and bandwidth a least-squares line through them gives.

use std::time::Instant;

fn main() {
    let world = match kiln::dist::world() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut points = Vec::new();
    for exp in [0u32, 6, 10, 14, 16, 18, 20, 22] {
        let n = 1usize << exp;
        let mut buf = vec![1.0f32; n];
        world.allreduce_f32(&mut buf); // warm-up
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut sync = [0.0f64];
            world.allreduce_f64(&mut sync);
            let t0 = Instant::now();
            world.allreduce_f32(&mut buf);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        if world.rank() == 0 {
            println!(
                "{:>9} f32 ({:>9} bytes): median {:>10.1} us",
                n,
                4 * n,
                med * 1e6
            );
        }
        points.push((4.0 * n as f64, med));
    }
    if world.rank() == 0 {
        // time = latency + bytes / bandwidth, least squares.
        let m = points.len() as f64;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / m, sy / m);
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        let slope = sxy / sxx;
        println!(
            "K={}: latency {:.1} us, {:.2} GB/s effective (time = latency + bytes / bandwidth)",
            world.size(),
            (my - slope * mx) * 1e6,
            1e-9 / slope
        );
    }
}
