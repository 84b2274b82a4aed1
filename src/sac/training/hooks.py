"""Lightning hooks shared by the two training modules (:class:`~sac.training.module.SACLitModule` and
:class:`~sac.training.interactive.InteractiveLitModule`)."""

from __future__ import annotations

import numpy as np


class RunHooks:
    """Mixin (before ``L.LightningModule`` in the bases) for a module with ``self.model`` (a SAC) and ``self.cfg``
    (a TrainConfig):

    * checkpoints keep only :meth:`kept_keys`: the frozen backbone tensors are rebuilt from the backbone file on
      resume, and storing them would make every last.ckpt as large as SAM (2.5 GB for vit_h) for nothing (a
      random-init backbone, as in tests, keeps everything);
    * each training epoch reseeds ``self.rng`` from (seed, epoch), so a resumed run draws the same prompts, and tells
      the training set its epoch (its random crops), except in crop-pool mode where crops are fixed.
    """

    def kept_keys(self) -> set[str]:
        """State-dict keys a checkpoint stores: the model's trained tensors."""
        return {f"model.{k}" for k in self.model.trained_state_dict()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.model.backbone_sha256 is None:
            return
        keep = self.kept_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "train_set", None) is not None and not self.cfg.crop_pool:
            dm.train_set.set_epoch(self.current_epoch)
        self.rng = np.random.default_rng([self.cfg.seed, self.current_epoch])
