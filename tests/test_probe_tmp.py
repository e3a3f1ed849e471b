from tests.conftest import run_vlr, small_run

def test_probe(tmp_path, synthetic_root):
    run = run_vlr("train", *small_run(synthetic_root), "trainer.max_epochs=1", dir=tmp_path / "run")
    assert run.returncode == 0, run.output
    print(run.output[-3000:])
    m = run.metrics
    ev = run_vlr("eval", f"ckpt_path={run.dir}/checkpoints/best.ckpt", "data.num_workers=0", dir=tmp_path / "ev")
    assert ev.returncode == 0, ev.output
    assert ev.metrics["test/rsum"] == m["test/rsum"]
    bad = run_vlr("train", *small_run(synthetic_root), "data.batch_size=0", dir=tmp_path / "bad")
    assert bad.returncode == 1 and bad.error == "error: data.batch_size must be a positive integer, got 0", bad.output
