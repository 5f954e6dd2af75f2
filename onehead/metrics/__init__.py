"""The papers' metrics, computable offline.

image.py     PSNR, SSIM, L1 (optionally inside a mask)
lpips.py     LPIPS with onehead's AlexNet and weights from a user file
identity.py  CSIM with dlib's face embedding (`onehead fetch csim`)
motion.py    AKD from mediapipe landmarks; AED and APD from onehead's tracker
`onehead eval` (onehead.evaluation) runs them all on models and baselines.
"""
