"""What every pipeline role uses: progress display, quiet TensorFlow start-up, strict float32 arithmetic."""
