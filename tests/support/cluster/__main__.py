import sys

from tests.support.cluster.cluster import main

sys.exit(main(sys.argv[1:]))
