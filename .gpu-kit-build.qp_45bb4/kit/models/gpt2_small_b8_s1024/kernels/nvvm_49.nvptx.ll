; ModuleID = 'LLVMDialectModule'
source_filename = "LLVMDialectModule"

define ptx_kernel void @nvvm_49_kernel(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 8, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 786432, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 65536, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 1024, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 768, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 8, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 2359296, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 1024, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 24576) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 1024
  %34 = udiv i64 %32, 1024
  %35 = urem i64 %34, 12
  %36 = udiv i64 %34, 12
  %37 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %38 = getelementptr half, ptr %37, i64 768
  %39 = mul nuw nsw i64 %36, 2359296
  %40 = mul nuw nsw i64 %33, 2304
  %41 = add nuw nsw i64 %39, %40
  %42 = mul nuw nsw i64 %35, 64
  %43 = add nuw nsw i64 %41, %42
  %44 = add nuw nsw i64 %43, %31
  %45 = getelementptr inbounds nuw half, ptr %38, i64 %44
  %46 = load half, ptr %45, align 2
  %47 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %48 = mul nuw nsw i64 %36, 786432
  %49 = mul nuw nsw i64 %35, 65536
  %50 = add nuw nsw i64 %48, %49
  %51 = mul nuw nsw i64 %33, 64
  %52 = add nuw nsw i64 %50, %51
  %53 = add nuw nsw i64 %52, %31
  %54 = getelementptr inbounds nuw half, ptr %47, i64 %53
  store half %46, ptr %54, align 2
  ret void
}

define ptx_kernel void @nvvm_49_kernel_0(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 8, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 786432, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 65536, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 1024, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 1536, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 8, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 2359296, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 1024, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 24576) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 1024
  %34 = udiv i64 %32, 1024
  %35 = urem i64 %34, 12
  %36 = udiv i64 %34, 12
  %37 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %38 = getelementptr half, ptr %37, i64 1536
  %39 = mul nuw nsw i64 %36, 2359296
  %40 = mul nuw nsw i64 %33, 2304
  %41 = add nuw nsw i64 %39, %40
  %42 = mul nuw nsw i64 %35, 64
  %43 = add nuw nsw i64 %41, %42
  %44 = add nuw nsw i64 %43, %31
  %45 = getelementptr inbounds nuw half, ptr %38, i64 %44
  %46 = load half, ptr %45, align 2
  %47 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %48 = mul nuw nsw i64 %36, 786432
  %49 = mul nuw nsw i64 %35, 65536
  %50 = add nuw nsw i64 %48, %49
  %51 = mul nuw nsw i64 %33, 64
  %52 = add nuw nsw i64 %50, %51
  %53 = add nuw nsw i64 %52, %31
  %54 = getelementptr inbounds nuw half, ptr %47, i64 %53
  store half %46, ptr %54, align 2
  ret void
}

define ptx_kernel void @nvvm_49_kernel_1(ptr %0, ptr %1) #0 {
  %3 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %3, ptr %1, 1
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, i64 0, 2
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 8, 3, 0
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 786432, 4, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 12, 3, 1
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 65536, 4, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 1024, 3, 2
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 64, 4, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 64, 3, 3
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1, 4, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, ptr %0, 1
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, i64 0, 2
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 8, 3, 0
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 2359296, 4, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 1024, 3, 1
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 2304, 4, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 12, 3, 2
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 64, 4, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 64, 3, 3
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 4, 3
  %25 = call range(i32 0, 24576) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %26 = sext i32 %25 to i64
  %27 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %28 = sext i32 %27 to i64
  %29 = mul nsw i64 %26, 256
  %30 = add i64 %28, %29
  %31 = urem i64 %30, 64
  %32 = udiv i64 %30, 64
  %33 = urem i64 %32, 1024
  %34 = udiv i64 %32, 1024
  %35 = urem i64 %34, 12
  %36 = udiv i64 %34, 12
  %37 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, 1
  %38 = mul nuw nsw i64 %36, 2359296
  %39 = mul nuw nsw i64 %33, 2304
  %40 = add nuw nsw i64 %38, %39
  %41 = mul nuw nsw i64 %35, 64
  %42 = add nuw nsw i64 %40, %41
  %43 = add nuw nsw i64 %42, %31
  %44 = getelementptr inbounds nuw half, ptr %37, i64 %43
  %45 = load half, ptr %44, align 2
  %46 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, 1
  %47 = mul nuw nsw i64 %36, 786432
  %48 = mul nuw nsw i64 %35, 65536
  %49 = add nuw nsw i64 %47, %48
  %50 = mul nuw nsw i64 %33, 64
  %51 = add nuw nsw i64 %49, %50
  %52 = add nuw nsw i64 %51, %31
  %53 = getelementptr inbounds nuw half, ptr %46, i64 %52
  store half %45, ptr %53, align 2
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
