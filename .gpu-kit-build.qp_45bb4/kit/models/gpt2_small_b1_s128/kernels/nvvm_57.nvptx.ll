; ModuleID = 'LLVMDialectModule'
source_filename = "LLVMDialectModule"

define ptx_kernel void @nvvm_57_kernel(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 1, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 98304, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 8192, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 128, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 768, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 1, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 294912, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 128, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 384) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 128
  %34 = udiv i64 %32, 128
  %35 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %36 = getelementptr half, ptr %35, i64 768
  %37 = mul nuw nsw i64 %33, 2304
  %38 = add nuw nsw i64 0, %37
  %39 = mul nuw nsw i64 %34, 64
  %40 = add nuw nsw i64 %38, %39
  %41 = add nuw nsw i64 %40, %31
  %42 = getelementptr inbounds nuw half, ptr %36, i64 %41
  %43 = load half, ptr %42, align 2
  %44 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %45 = mul nuw nsw i64 %34, 8192
  %46 = add nuw nsw i64 0, %45
  %47 = mul nuw nsw i64 %33, 64
  %48 = add nuw nsw i64 %46, %47
  %49 = add nuw nsw i64 %48, %31
  %50 = getelementptr inbounds nuw half, ptr %44, i64 %49
  store half %43, ptr %50, align 2
  ret void
}

define ptx_kernel void @nvvm_57_kernel_0(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 1, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 98304, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 8192, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 128, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 1536, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 1, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 294912, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 128, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 384) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 128
  %34 = udiv i64 %32, 128
  %35 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %36 = getelementptr half, ptr %35, i64 1536
  %37 = mul nuw nsw i64 %33, 2304
  %38 = add nuw nsw i64 0, %37
  %39 = mul nuw nsw i64 %34, 64
  %40 = add nuw nsw i64 %38, %39
  %41 = add nuw nsw i64 %40, %31
  %42 = getelementptr inbounds nuw half, ptr %36, i64 %41
  %43 = load half, ptr %42, align 2
  %44 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %45 = mul nuw nsw i64 %34, 8192
  %46 = add nuw nsw i64 0, %45
  %47 = mul nuw nsw i64 %33, 64
  %48 = add nuw nsw i64 %46, %47
  %49 = add nuw nsw i64 %48, %31
  %50 = getelementptr inbounds nuw half, ptr %44, i64 %49
  store half %43, ptr %50, align 2
  ret void
}

define ptx_kernel void @nvvm_57_kernel_1(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 1, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 98304, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 8192, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 128, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 0, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 1, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 294912, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 128, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 384) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 128
  %34 = udiv i64 %32, 128
  %35 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %36 = mul nuw nsw i64 %33, 2304
  %37 = add nuw nsw i64 0, %36
  %38 = mul nuw nsw i64 %34, 64
  %39 = add nuw nsw i64 %37, %38
  %40 = add nuw nsw i64 %39, %31
  %41 = getelementptr inbounds nuw half, ptr %35, i64 %40
  %42 = load half, ptr %41, align 2
  %43 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %44 = mul nuw nsw i64 %34, 8192
  %45 = add nuw nsw i64 0, %44
  %46 = mul nuw nsw i64 %33, 64
  %47 = add nuw nsw i64 %45, %46
  %48 = add nuw nsw i64 %47, %31
  %49 = getelementptr inbounds nuw half, ptr %43, i64 %48
  store half %42, ptr %49, align 2
  ret void
}

; Function Attrs: nocallback nofree nosync nounwind speculatable willreturn memory(none)
declare noundef range(i32 0, 2147483647) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x() #1

; Function Attrs: nocallback nofree nosync nounwind speculatable willreturn memory(none)
declare noundef range(i32 0, 1024) i32 @llvm.nvvm.read.ptx.sreg.tid.x() #1

attributes #0 = { "nvvm.maxntid"="256,1,1" }
attributes #1 = { nocallback nofree nosync nounwind speculatable willreturn memory(none) }

!llvm.module.flags = !{!0}

!0 = !{i32 2, !"Debug Info Version", i32 3}
