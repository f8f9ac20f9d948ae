"""Helpers both packages use and no role owns: terminal output (tables, progress bars) and timing. Imports
nothing else of mcdrop."""
