"""The training stage: Keras 3 dropout models (``models``), data (``data``, ``tabular``), settings (``config``), the
training loop and its record (``loop``), k-fold dropout-rate selection (``selection``) and the observation-noise
estimate (``observation_noise``)."""
