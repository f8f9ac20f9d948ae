"""The export stage: any Keras model with dropout → verified LiteRT graphs in a versioned model repository.

Folders by role, each importing only those below it: ``stages`` (the steps ``exporter.export`` runs) > ``verify`` >
``convert`` > ``graphs`` > ``model``. Start at ``exporter``.
"""
