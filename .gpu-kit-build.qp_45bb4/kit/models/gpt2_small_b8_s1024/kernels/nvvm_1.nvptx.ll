; ModuleID = 'LLVMDialectModule'
source_filename = "LLVMDialectModule"

define ptx_kernel void @nvvm_1_kernel(ptr %0, ptr %1, ptr %2) #0 {
  %4 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %2, 0
  %5 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %4, ptr %2, 1
  %6 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %5, i64 0, 2
  %7 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %6, i64 8, 3, 0
  %8 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %7, i64 1048576, 4, 0
  %9 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %8, i64 1, 3, 1
  %10 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %9, i64 1048576, 4, 1
  %11 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %10, i64 1024, 3, 2
  %12 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %11, i64 1024, 4, 2
  %13 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %12, i64 1024, 3, 3
  %14 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %13, i64 1, 4, 3
  %15 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %1, 0
  %16 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %15, ptr %1, 1
  %17 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %16, i64 0, 2
  %18 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %17, i64 8, 3, 0
  %19 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %18, i64 1024, 4, 0
  %20 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %19, i64 1, 3, 1
  %21 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %20, i64 1024, 4, 1
  %22 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %21, i64 1024, 3, 2
  %23 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %22, i64 1, 4, 2
  %24 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %23, i64 1, 3, 3
  %25 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %24, i64 1, 4, 3
  %26 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } poison, ptr %0, 0
  %27 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %26, ptr %0, 1
  %28 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %27, i64 0, 2
  %29 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %28, i64 8, 3, 0
  %30 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %29, i64 1024, 4, 0
  %31 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %30, i64 1, 3, 1
  %32 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %31, i64 1024, 4, 1
  %33 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %32, i64 1, 3, 2
  %34 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %33, i64 1024, 4, 2
  %35 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %34, i64 1024, 3, 3
  %36 = insertvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %35, i64 1, 4, 3
  %37 = call range(i32 0, 32768) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %38 = sext i32 %37 to i64
  %39 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %40 = sext i32 %39 to i64
  %41 = mul nsw i64 %38, 256
  %42 = add i64 %40, %41
  %43 = urem i64 %42, 1024
  %44 = udiv i64 %42, 1024
  %45 = urem i64 %44, 1024
  %46 = udiv i64 %44, 1024
  %47 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %36, 1
  %48 = mul nuw nsw i64 %46, 1024
  %49 = add nuw nsw i64 %48, 0
  %50 = add nuw nsw i64 %49, 0
  %51 = add nuw nsw i64 %50, %43
  %52 = getelementptr inbounds nuw i64, ptr %47, i64 %51
  %53 = load i64, ptr %52, align 4
  %54 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %25, 1
  %55 = mul nuw nsw i64 %46, 1024
  %56 = add nuw nsw i64 %55, 0
  %57 = add nuw nsw i64 %56, %45
  %58 = add nuw nsw i64 %57, 0
  %59 = getelementptr inbounds nuw i64, ptr %54, i64 %58
  %60 = load i64, ptr %59, align 4
  %61 = icmp sle i64 %53, %60
  %62 = select i1 %61, half 0xH0000, half 0xHFC00
  %63 = fpext half %62 to float
  %64 = extractvalue { ptr, ptr, i64, [4 x i64], [4 x i64] } %14, 1
  %65 = mul nuw nsw i64 %46, 1048576
  %66 = add nuw nsw i64 %65, 0
  %67 = mul nuw nsw i64 %45, 1024
  %68 = add nuw nsw i64 %66, %67
  %69 = add nuw nsw i64 %68, %43
  %70 = getelementptr inbounds nuw float, ptr %64, i64 %69
  store float %63, ptr %70, align 4
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
