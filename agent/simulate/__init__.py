"""The generated road-side world: training scenes for the detector and recorded sample drives.

`render_training_scene`, `CLASSES` and `CLUTTER_KINDS` are the detector training API (see
scene.py);
`simulate_drive` writes a drive (video, NMEA track, ground truth; see drive.py).
"""

from agent.simulate.scene import (
    CLASSES,
    CLUTTER_KINDS,
    render_training_recording,
    render_training_scene,
)

__all__ = ["CLASSES", "CLUTTER_KINDS", "render_training_recording", "render_training_scene"]
