"""The noise schedule every diffusion family of onehead uses: v-prediction on a zero-terminal-SNR
schedule (rescaled betas), trailing timesteps. One place, so the families cannot drift apart."""


def zero_snr_schedule(config) -> dict:
    """diffusers scheduler arguments (DDPMScheduler, DDIMScheduler) from a config with
    num_train_timesteps, beta_schedule, beta_start and beta_end."""
    return dict(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="v_prediction",
                rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False)
