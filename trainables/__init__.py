"""Ray Tune function trainables: thin wrappers that run the tune_eskd engine one epoch per report."""
from .student import train_student
from .teacher import train_teacher

__all__ = ["train_student", "train_teacher"]
