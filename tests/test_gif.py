"""``evaluate --gif``: one frame per step of the evaluated greedy episode (plus the start), each the
env's own picture of that step; Box Pushing always, SMACLite where it is installed."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchrl.envs.utils import step_mdp

from lightning_marl.config import compose
from lightning_marl.config.schema import EnvWorkers
from lightning_marl.config.validate import to_typed
from lightning_marl.envs import make_env
from lightning_marl.errors import ConfigError
from lightning_marl.evaluate import CAPTION_PX, MIN_GIF_PX, load, save_gif
from lightning_marl.experiment import run
from lightning_marl.models.policy import RecurrentPolicy

SMALL = ["data.warmup_episodes=4", "data.batch_size=4", "eval.episodes=2", "eval.num_envs=2",
         "trainer.enable_progress_bar=false", "checkpoint.replay=false"]


def trained(tmp_path, *overrides):
    run(to_typed(compose([*SMALL, *overrides])), tmp_path)
    return load(tmp_path / "checkpoints" / "last.ckpt")


@torch.no_grad()
def episode_pictures(loaded, seed: int) -> list[np.ndarray]:
    """The greedy episode stepped here, independently of evaluate.py: the env's picture at each step."""
    module, env_cfg, _ = loaded
    env = make_env(env_cfg, 1, seed, workers=EnvWorkers.in_process)
    actor = RecurrentPolicy(module.agent, 0.0, torch.device("cpu"))
    td = env.reset()
    pictures = [env.render_rgb(0)]
    for _ in range(module.env_info["episode_limit"]):
        td = env.step(actor(td))
        pictures.append(env.render_rgb(0))
        if bool(td["next", "done"][0]):
            break
        td = step_mdp(td)
    env.close()
    return pictures


def gif_frames(path) -> list[np.ndarray]:
    gif = Image.open(path)
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.array(gif.convert("RGB")))
    return frames


def assert_frames_are_the_episode(path, pictures, info, exact: bool = True) -> None:
    """Frame i is the picture of step i: exactly where the picture has at most 256 colours (a GIF's
    palette); otherwise within the palette's rounding, and nearer to step i than to step i - 1."""
    frames = gif_frames(path)
    assert len(frames) == len(pictures) == info["steps"] + 1 == info["frames"]

    def distance(drawn, picture):
        factor = max(1, MIN_GIF_PX // max(picture.shape[:2]))
        expected = picture[..., :3].repeat(factor, axis=0).repeat(factor, axis=1).astype(int)
        return np.abs(drawn[CAPTION_PX:CAPTION_PX + expected.shape[0], :expected.shape[1]].astype(int) - expected)

    for i, (frame, picture) in enumerate(zip(frames, pictures)):
        error = distance(frame, picture)
        if exact:
            assert error.max() == 0, f"frame {i} is not step {i} of the episode"
        else:
            assert error.mean() < 2.0, f"frame {i} is not step {i} of the episode ({error.mean():.2f})"
            if i and not np.array_equal(picture, pictures[i - 1]):
                assert error.mean() < distance(frame, pictures[i - 1]).mean(), f"frame {i} shows step {i - 1}"


def test_box_pushing_gif_is_the_evaluated_episode(tmp_path):
    loaded = trained(tmp_path, "env=box_pushing", "env.horizon=25", "env.random_init=true", "total_env_steps=600")
    info = save_gif(loaded, tmp_path / "episode.gif", seed=5)
    pictures = episode_pictures(loaded, seed=5)
    assert len({p.tobytes() for p in pictures}) > 1  # agents moved: the frames are not one picture repeated
    assert_frames_are_the_episode(tmp_path / "episode.gif", pictures, info)


def test_a_gif_of_a_matrix_game_is_refused(tmp_path):
    loaded = trained(tmp_path, "env=matrix", "total_env_steps=100")
    with pytest.raises(ConfigError, match="--gif: env 'matrix' has no drawing.*box_pushing, overcooked, smaclite"):
        save_gif(loaded, tmp_path / "matrix.gif")
    assert not (tmp_path / "matrix.gif").exists()


def test_smaclite_gif_is_the_evaluated_episode(tmp_path):
    pytest.importorskip("smaclite")
    loaded = trained(tmp_path, "env=smaclite", "total_env_steps=120", "data.num_envs=1",
                     "eval.num_envs=1", "eval.episodes=1", "env.episode_limit=20")
    info = save_gif(loaded, tmp_path / "battle.gif", seed=2)
    # pygame's anti-aliased circles and text have more colours than a GIF's palette of 256
    pictures = episode_pictures(loaded, seed=2)
    assert len({p.tobytes() for p in pictures}) > 1
    assert_frames_are_the_episode(tmp_path / "battle.gif", pictures, info, exact=False)
