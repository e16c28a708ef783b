"""``--max-loaded-models``: switching between checkpoints keeps the recent ones loaded (least recently used out
first), and a model is still unloaded first when the new one would not fit in the free memory."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import txt2img


@pytest.fixture
def two_models(tmp_path, tiny_model_store):
    models = tmp_path / "models"
    shutil.copytree(tiny_model_store, models)
    shutil.copytree(models / "Stable-diffusion" / "tiny-sd1", models / "Stable-diffusion" / "tiny-sd1-copy")
    return models


def studio(tmp_path, models, **config):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    return build_services(AppConfig(models_dir=models, outdir=tmp_path / "out", data_dir=tmp_path / "data",
                                    default_ckpt="tiny-sd1", **config))


def switch_back_and_forth(services) -> int:
    services.start()
    try:
        before = services.engine.pipelines.load_count
        for name in ("tiny-sd1", "tiny-sd1-copy", "tiny-sd1", "tiny-sd1-copy"):
            services.run(txt2img(model=name, steps=1, width=64, height=64))
        return services.engine.pipelines.load_count - before
    finally:
        services.stop()


def test_two_loaded_models_switch_without_reloading(tmp_path, two_models, one_thread):
    assert switch_back_and_forth(studio(tmp_path, two_models, max_loaded_models=2)) == 2
    assert switch_back_and_forth(studio(tmp_path / "one", two_models, max_loaded_models=1)) == 4


def test_a_model_that_would_not_fit_unloads_the_others_first(tmp_path, two_models, one_thread):
    from modules.models.pipelines import weights_size

    services = studio(tmp_path, two_models, max_loaded_models=3)
    size = weights_size(two_models / "Stable-diffusion" / "tiny-sd1")
    services.engine.pipelines.free_memory = lambda: size  # a machine with less free than a model needs
    assert switch_back_and_forth(services) == 4
    assert len(services.engine.pipelines.loaded_titles()) == 1


def test_the_flag_is_checked_at_start():
    import launch

    config = launch.build_config(launch.parse_args(["--max-loaded-models", "3"]))
    assert config.max_loaded_models == 3
    with pytest.raises(SystemExit, match="max-loaded-models"):
        launch.build_config(launch.parse_args(["--max-loaded-models", "0"]))
