//! The per-call cost of the load balancing module's ranking and of least-loaded selection.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use qlik_lb::balance::load::{choose_least_loaded, EngineLoad, LoadInputs};
use qlik_lb::lbmodule::{rank, EngineState, Prioritize};

fn inputs(n: usize) -> Vec<LoadInputs> {
    (0..n)
        .map(|i| LoadInputs {
            engine: Some(EngineLoad {
                pressure: (i * 37 % 100) as f64 / 100.0,
                sessions: (i * 13 % 50) as u64,
                hot: i % 11 == 10,
            }),
            own: (i % 7) as u64,
            recent: 0,
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn states(n: usize) -> Vec<EngineState> {
    inputs(n)
        .into_iter()
        .enumerate()
        .map(|(i, load)| match i % 9 {
            8 => EngineState::Unknown,
            k => EngineState::Known {
                available: k != 7,
                draining: false,
                load,
                warm: k % 4 == 0,
            },
        })
        .collect()
}

fn ranking(c: &mut Criterion) {
    for n in [3, 20, 100] {
        let s = states(n);
        let mut tie = 0usize;
        c.bench_function(&format!("rank {n} engines"), |b| {
            b.iter(|| {
                tie += 1;
                rank(black_box(&s), tie)
            })
        });
    }
    let request = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/qlik/fixtures/prioritize-request.json"
    ))
    .expect("fixture");
    c.bench_function("prioritize parse + render (fixture)", |b| {
        b.iter(|| {
            let p = Prioritize::parse(black_box(&request)).expect("valid");
            p.render(&[1, 2, 0])
        })
    });
}

fn selection(c: &mut Criterion) {
    let mut rng = rand::thread_rng();
    for n in [3, 20] {
        let x = inputs(n);
        c.bench_function(&format!("least-loaded pick of {n}"), |b| {
            b.iter(|| choose_least_loaded(black_box(&x), &mut rng))
        });
    }
}

criterion_group!(benches, ranking, selection);
criterion_main!(benches);
