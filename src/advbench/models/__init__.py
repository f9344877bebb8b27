"""Models the attack families use: victims (the classifiers attacked), demo models trained on
phantoms, and (later) checkers and surrogates. One registry per role; heavy libraries are
imported only when a model is loaded."""
