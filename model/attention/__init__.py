"""Batched attribution maps: Grad-CAM, Guided Backpropagation, Integrated Gradients.

Tensor in, tensor out; differentiable on request (``create_graph=True``); the model is left
exactly as found (training flag, ``requires_grad``, modules, no hooks). See ``docs/attention.md``.
"""

from model.attention.gradcam import grad_cam, grad_cam_display, scores_and_cams
from model.attention.guided import CamAndGuided, grad_cam_and_guided, guided_backprop
from model.attention.integrated import integrated_gradients

__all__ = [
    "CamAndGuided",
    "grad_cam",
    "grad_cam_and_guided",
    "grad_cam_display",
    "guided_backprop",
    "integrated_gradients",
    "scores_and_cams",
]
