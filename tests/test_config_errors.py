import pytest

from lightning_marl.config import validate
from lightning_marl.registry import ConfigError


@pytest.mark.parametrize("override, message", [
    ("env.name=atari", "unknown env 'atari'; allowed: box_pushing, matrix"),
    ("mixer.name=qmax", "unknown mixer 'qmax'; allowed: "),
    ("mixer.central_info=oracle", "unknown mixer.central_info 'oracle'; allowed: state, history"),
    ("learner.gamma=1.5", "learner.gamma=1.5 is out of range; allowed: a number in [0, 1]"),
    ("learner.td_lambda=-0.1", "learner.td_lambda=-0.1 is out of range"),
    ("data.batch_size=0", "data.batch_size=0 is out of range; allowed: an integer >= 1"),
    ("learner.lr=0", "learner.lr=0 is out of range; allowed: a number > 0"),
    ("data.buffer_size=8", "data.batch_size=32 exceeds data.buffer_size=8"),
    ("learner.td_weighting=pessimistic", "learner.td_weighting='pessimistic' is out of range; allowed: none or optimistic"),
    ("learner.optimistic_alpha=0", "learner.optimistic_alpha=0 is out of range; allowed: a number in (0, 1]"),
    ("data.collector_processes=3", "data.num_envs=8 is not a multiple of data.collector_processes=3"),
    ("agent.torso=transformer", "agent.torso='transformer' is out of range; allowed: mlp or cnn"),
    ("data.priority_beta=1.5", "data.priority_beta=1.5 is out of range; allowed: a number in [0, 1]"),
    ("data.prioritized=maybe", "data.prioritized='maybe' is out of range; allowed: true or false"),
    ("+eval.env.layout=cramped_room", "eval.env.layout is not an option of env box_pushing; allowed: big_box_reward,"),
    ("data.worker_start_method=threads", "data.worker_start_method='threads' is out of range; allowed: null, spawn"),
])
def test_bad_values_are_named_with_what_is_allowed(make_config, override, message):
    with pytest.raises(ConfigError) as err:
        validate(make_config([override]))
    assert message in str(err.value)


def test_the_default_config_is_valid(make_config):
    validate(make_config([]))


def test_worker_processes_and_the_background_thread_are_alternatives(make_config):
    with pytest.raises(ConfigError, match="data.async_collection=true with data.collector_processes=2"):
        validate(make_config(["data.collector_processes=2", "data.async_collection=true"]))


def test_a_config_saved_before_newer_keys_existed_still_validates(make_config):
    from omegaconf import open_dict

    cfg = make_config([])
    with open_dict(cfg):  # as a run saved by an older version, resumed now
        del cfg.data["collector_processes"], cfg.learner["td_weighting"], cfg.checkpoint["keep_all"]
    validate(cfg)
    with open_dict(cfg), pytest.raises(ConfigError, match="learner.gamma=2"):
        cfg.learner.gamma = 2  # the keys that are there are still checked
        validate(cfg)


def test_cnn_torso_on_an_env_without_grid_observations_is_refused(make_config, tmp_path):
    from lightning_marl.experiment import run

    with pytest.raises(ConfigError, match=r"agent.torso='cnn' is out of range; allowed: mlp for this env \(cnn needs grid"):
        run(make_config(["agent.torso=cnn", "total_env_steps=100", "trainer.enable_progress_bar=false"]), tmp_path)
