"""rillet: a functional, pipeline-style, data-centric reinforcement-learning stack.

Import the stage folders as ``rillet.pipelines``, ``rillet.datasets``, ``rillet.learners``,
``rillet.actors`` and ``rillet.evals``. This top-level module stays light on purpose: a GPU host
imports ``rillet.learners`` without TensorFlow or Reverb installed.
"""

__version__ = "0.1.0"
