"""The papers' metrics, computable offline.

image.py     PSNR, SSIM, L1 (optionally inside a mask)
lpips.py     LPIPS with onehead's AlexNet and weights from a user file
identity.py  CSIM with dlib's face embedding (`onehead fetch csim`); identity kept (same-person share)
motion.py    AKD from mediapipe landmarks; AED and APD from onehead's tracker; without ground truth:
             mouth opening and its Pearson r, motion AKD, the asked-for head rotation
temporal.py  flicker: change between consecutive frames where nothing should move; change_error:
             the output's frame-to-frame change against the ground truth's
`onehead eval` (onehead.evaluation) runs them all on models and baselines.
"""
