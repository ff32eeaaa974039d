

def test_print_config_takes_overrides_before_or_after_it(capsys) -> None:
    """Review of 2026-12-04: an override after --print-config was refused as an unknown argument."""
    import json

    from train.__main__ import main

    for argv in (["train/configs/nano_stage1.yaml", "--print-config", "optim.lr=1e-4"],
                 ["train/configs/nano_stage1.yaml", "optim.lr=1e-4", "--print-config"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["optim"]["lr"] == 1e-4
