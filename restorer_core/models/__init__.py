"""The one-step restorer: configs, attention processors, schedule math, and the module itself."""
