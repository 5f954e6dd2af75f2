"""The networks: one folder per model family (gaussian_diffusion/) plus the parts families share
(the UV Gaussian field, codecs, pose guider and domain tokens, shared attention, temporal layers)."""
