"""What every pipeline role uses: training progress text, quiet TensorFlow start-up, strict float32 arithmetic."""
