"""A fuzzer of random Keras models: every one must pass in full or fail loudly.

:mod:`fuzz.grammar` draws models (no TensorFlow in this process), :mod:`fuzz.outcome`
classifies what ``tf2torch convert`` did with each, :mod:`fuzz.run` drives them
(``make fuzz``, ``FUZZ_N=``, ``FUZZ_SEED=``).
"""
