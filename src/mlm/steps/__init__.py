"""The six pipeline steps, one plain function each (URIs and parameters in, a result out).

The CLI, the KFP components, the local pipeline runner and the tests all call these functions.
"""
