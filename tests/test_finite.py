"""A run whose training loss becomes non-finite stops with a clear message and writes no NaN checkpoint."""

from zoo.cli import main


def test_non_finite_loss_stops_the_run_with_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "recipes/classify_digits_lenet5.py", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
               "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "optim.lr=1e30", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "training loss is" in err and "epoch 1, step" in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert not (out / "best.ckpt").exists() and not (out / "last.ckpt").exists()
