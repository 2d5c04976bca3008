"""The optimiser and loss the `train` params give: Adam, label smoothing, a cosine schedule, weight averaging."""

from __future__ import annotations

from typing import Any

COSINE_FLOOR = 0.01  # fixed, not a param: the cosine schedule ends at 1 % of train.learning_rate


def compile_model(
    model: Any,
    learning_rate: float,
    label_smoothing: float = 0.0,
    schedule: str = "constant",
    total_steps: int = 1,
    ema: float = 0.0,
    jit_compile: bool = False,
) -> None:
    """Adam with categorical cross-entropy, as in the notebook; optionally label smoothing, a cosine decay and an
    exponential moving average of the weights (momentum `ema`), which replaces the weights when training ends."""
    import keras

    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps, alpha=COSINE_FLOOR
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, use_ema=ema > 0, ema_momentum=ema or 0.99),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,  # never Keras's "auto", which turns XLA on wherever there is a GPU
    )


def compile_from_params(model: Any, params: dict[str, Any], total_steps: int) -> None:
    """compile_model with the `train` params' rate, smoothing, schedule (over `total_steps`), weight averaging, XLA."""
    compile_model(
        model,
        params["learning_rate"],
        params["label_smoothing"],
        params["schedule"],
        total_steps,
        params["ema"],
        params["jit_compile"],
    )
