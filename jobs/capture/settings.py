"""A run's capture settings: their defaults and the rules they must keep among themselves.

The study spec's ``capture`` section (:class:`dynstudy.study.spec.CaptureSpec`) and the
:class:`~dynstudy.jobs.capture.recorder.Recorder` take their defaults from :data:`CAPTURE_DEFAULTS`
and check a section with :func:`settings_problem`; torch is not needed here.
"""
from __future__ import annotations

#: The capture section's defaults: the paper protocol's probe (ResNet-18's P) and channel count.
CAPTURE_DEFAULTS = {
    "probe_size": 2048,         # the first P validation images, in fixed order
    "channels_per_stage": 32,   # the metric channels of each stage (K)
    "redraw_channels": False,   # re-draw the channel subset at every capture (the authors' code)
    "store_channels": None,     # channels stored per stage (>= channels_per_stage, or "all"); None: K
    "every_n_steps": None,      # the built-in trainer also captures every N optimiser steps
    "step_probe_size": 64,      # step captures keep the first P_t probe images and the metric channels
    "enabled": True,            # False only to measure capture overhead: nothing can be analysed
    "batch_size": 256,          # probe images per forward pass
}


def settings_problem(cap: dict, step_captures: bool | None = None) -> str | None:
    """Why the capture section ``cap`` contradicts itself (None: it does not).

    Parameters
    ----------
    cap : a complete capture section (every key of :data:`CAPTURE_DEFAULTS`).
    step_captures : whether the run takes step captures; None: when ``cap["every_n_steps"]`` is set.
    """
    steps = cap["every_n_steps"] is not None if step_captures is None else step_captures
    stored = cap["store_channels"]
    if isinstance(stored, int) and stored < cap["channels_per_stage"]:
        return (f"capture.store_channels={stored} must be >= channels_per_stage={cap['channels_per_stage']} "
                "(or 'all')")
    if steps and cap["step_probe_size"] > cap["probe_size"]:
        return (f"capture.step_probe_size={cap['step_probe_size']} is larger than capture.probe_size="
                f"{cap['probe_size']}: step captures take the first P_t probe images; lower it")
    if steps and cap["redraw_channels"]:
        return ("capture.every_n_steps with capture.redraw_channels=true: re-drawn channels have no series over "
                "training time; set redraw_channels: false for the temporal protocol")
    return None


def probe_length_problem(probe_size: int, min_scale: int) -> str | None:
    """Why a probe of ``probe_size`` images is too short for DFA at ``min_scale`` (None: it is long enough)."""
    if probe_size < 2 * min_scale:
        return (f"capture.probe_size={probe_size} is too short for DFA with analysis.min_scale={min_scale}: need at "
                f"least {2 * min_scale} points")
    return None
