"""CoRPA: clinically focused perturbations of a study's concept vector, written out as an
adversarial report (``reports``) and shown in an edited image.

``planner`` decides what each adversarial case should say (its target concept states and class
labels: the ground truth of the case); ``sentences`` and ``reports`` write a report that says
exactly that, checked by re-extraction.
"""
