# Reference for the speed target in BENCHMARKS.md: the two Gram products with numpy / OpenBLAS.
import numpy as np, time
N,d=16384,4096
rng=np.random.default_rng(0)
X=rng.standard_normal((N,d),dtype=np.float32); Y=rng.standard_normal((N,d),dtype=np.float32)
for it in range(2):
  t=time.time(); H=Y.T@Y; t1=time.time(); G=X.T@Y; t2=time.time()
  print(f'syrk {t1-t:.2f} gemm {t2-t1:.2f} total {t2-t:.2f}')
